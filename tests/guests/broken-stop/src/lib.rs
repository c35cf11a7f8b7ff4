//! Breaks one promise: see `guest_promises::Broken::Stop`.
guest_promises::broken_plugin!(BrokenStop, "broken-stop", guest_promises::Broken::Stop);
