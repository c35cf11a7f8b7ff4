//! Spins in `describe` without ever calling the host.
guest_common::guest_plugin!(
    LoopForever,
    info = {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
);
