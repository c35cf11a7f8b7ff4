//! Shared helpers for the end-to-end tests.
#![allow(dead_code)]

use host::runtime::{Runtime, RuntimeConfig};
use std::path::Path;
use std::time::{Duration, Instant};

/// Paths of the test guests and the SDK example, built by `host/build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}

/// A runtime with its own cache directory, so tests never share artifacts.
pub fn runtime(cache: &Path) -> Runtime {
    runtime_with(cache, RuntimeConfig::default().cpu_budget)
}

pub fn runtime_with(cache: &Path, cpu_budget: u64) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        cpu_budget,
        memory_limit_bytes: 64 << 20,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
