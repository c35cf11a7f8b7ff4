//! Paths of the test guests and the SDK's examples, built for
//! `wasm32-wasip2` by this crate's build script: `test_artifacts::HOSTILE`
//! and so on. Never embedded in the host.

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
