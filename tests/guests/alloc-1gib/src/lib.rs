//! Tries to allocate and touch 1 GiB in `describe`.
guest_common::guest_plugin!(
    Alloc1Gib,
    info = {
        let big = vec![1u8; 1 << 30];
        let name = format!("alloc-1gib-{}", std::hint::black_box(&big)[12345]);
        guest_common::info(&name, &[])
    }
);
