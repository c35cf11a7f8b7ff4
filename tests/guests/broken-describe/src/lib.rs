//! Breaks one promise: see `guest_promises::Broken::Describe`.
guest_promises::broken_plugin!(
    BrokenDescribe,
    "broken-describe",
    guest_promises::Broken::Describe
);
