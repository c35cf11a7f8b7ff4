//! Builds every wasm guest of the workspace and exposes them:
//! - the built-in plugins as bytes embedded in the binary (`builtin_plugins.rs`);
//! - the test guests and the SDK example as path constants for the tests
//!   (`test_guests.rs`), never embedded.

use std::fmt::Write as _;
use std::path::PathBuf;

mod build_wasm;
use build_wasm::{Guest, build_guests, ensure_wasm_target};

const BUILTIN: &[Guest] = &[
    Guest {
        name: "docker",
        package: "docker-plugin",
        artifact: "docker_plugin",
    },
    Guest {
        name: "process",
        package: "process-plugin",
        artifact: "process_plugin",
    },
    Guest {
        name: "mock_serverless",
        package: "mock-serverless-plugin",
        artifact: "mock_serverless_plugin",
    },
];

const TEST_GUESTS: &[Guest] = &[
    Guest {
        name: "misbehave",
        package: "guest-misbehave",
        artifact: "guest_misbehave",
    },
    Guest {
        name: "trap_describe",
        package: "guest-trap-describe",
        artifact: "guest_trap_describe",
    },
    Guest {
        name: "loop_forever",
        package: "guest-loop-forever",
        artifact: "guest_loop_forever",
    },
    Guest {
        name: "alloc_1gib",
        package: "guest-alloc-1gib",
        artifact: "guest_alloc_1gib",
    },
    Guest {
        name: "ungranted_capability",
        package: "guest-ungranted-capability",
        artifact: "guest_ungranted_capability",
    },
    Guest {
        name: "other_world",
        package: "guest-other-world",
        artifact: "guest-other-world",
    },
    Guest {
        name: "contract_v2",
        package: "guest-contract-v2",
        artifact: "guest_contract_v2",
    },
    Guest {
        name: "nonconforming",
        package: "guest-nonconforming",
        artifact: "guest_nonconforming",
    },
    Guest {
        name: "describe_flood",
        package: "guest-describe-flood",
        artifact: "guest_describe_flood",
    },
    Guest {
        name: "hostile",
        package: "guest-hostile",
        artifact: "guest_hostile",
    },
    Guest {
        name: "broken_stop",
        package: "guest-broken-stop",
        artifact: "guest_broken_stop",
    },
    Guest {
        name: "broken_destroy",
        package: "guest-broken-destroy",
        artifact: "guest_broken_destroy",
    },
    Guest {
        name: "broken_output",
        package: "guest-broken-output",
        artifact: "guest_broken_output",
    },
    Guest {
        name: "broken_describe",
        package: "guest-broken-describe",
        artifact: "guest_broken_describe",
    },
    Guest {
        name: "broken_exit",
        package: "guest-broken-exit",
        artifact: "guest_broken_exit",
    },
    Guest {
        name: "flood_wait",
        package: "guest-flood-wait",
        artifact: "guest_flood_wait",
    },
    Guest {
        name: "hello_example",
        package: "hello-plugin",
        artifact: "hello_plugin",
    },
    Guest {
        name: "nice_example",
        package: "nice-plugin",
        artifact: "nice_plugin",
    },
    Guest {
        name: "bwrap_example",
        package: "bwrap-plugin",
        artifact: "bwrap_plugin",
    },
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ lives in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in [
        "wit",
        "sdk",
        "plugins",
        "tests/guests",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-changed=build_wasm.rs");
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join(".cargo/config.toml").display()
    );

    ensure_wasm_target();
    let all: Vec<&Guest> = BUILTIN.iter().chain(TEST_GUESTS).collect();
    let built = build_guests(&workspace, &out_dir, &all);

    let mut builtin = String::new();
    let mut tests = String::new();
    for (name, path) in built {
        let upper = name.to_uppercase();
        if BUILTIN.iter().any(|g| g.name == name) {
            writeln!(
                builtin,
                "pub const {upper}: &[u8] = include_bytes!({path:?});"
            )
            .expect("write to string");
        } else {
            writeln!(tests, "pub const {upper}: &str = {path:?};").expect("write to string");
        }
    }
    std::fs::write(out_dir.join("builtin_plugins.rs"), builtin).expect("write builtin_plugins.rs");
    std::fs::write(out_dir.join("test_guests.rs"), tests).expect("write test_guests.rs");
}
