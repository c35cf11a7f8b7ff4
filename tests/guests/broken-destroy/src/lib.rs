//! Breaks one promise: see `guest_promises::Broken::Destroy`.
guest_promises::broken_plugin!(
    BrokenDestroy,
    "broken-destroy",
    guest_promises::Broken::Destroy
);
