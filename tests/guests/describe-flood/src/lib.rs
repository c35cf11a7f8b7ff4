//! Calls the host forever in `describe`, so a CPU bound that restarts at
//! every host call never stops it: only the call's deadline does.
guest_common::guest_plugin!(
    DescribeFlood,
    info = loop {
        guest_common::host_plugin_sdk::log::debug("still describing");
    }
);
