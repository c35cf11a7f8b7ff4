//! Traps (panics, and panic aborts in wasm) as soon as the host asks who it is.
guest_common::guest_plugin!(
    TrapDescribe,
    info = panic!("trap-describe: deliberate trap in describe")
);
