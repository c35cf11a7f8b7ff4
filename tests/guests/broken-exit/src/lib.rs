//! Breaks one promise: see `guest_promises::Broken::Exit`.
guest_promises::broken_plugin!(BrokenExit, "broken-exit", guest_promises::Broken::Exit);
