//! Breaks one promise: see `guest_promises::Broken::Output`.
guest_promises::broken_plugin!(
    BrokenOutput,
    "broken-output",
    guest_promises::Broken::Output
);
