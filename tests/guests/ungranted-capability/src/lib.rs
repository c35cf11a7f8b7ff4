//! Imports the `process` capability: loads only where `process` is granted.
use host_plugin_sdk::capabilities::process;

guest_common::guest_plugin!(
    UngrantedCapability,
    info = {
        // Referenced so the import is kept; never reached at load time.
        if std::hint::black_box(false) {
            let _ = process::signal(0, 0);
        }
        guest_common::info("ungranted-capability", &["process"])
    }
);
