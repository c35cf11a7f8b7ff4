//! Builds the built-in plugins for `wasm32-wasip2` and embeds them in the
//! binary (`builtin_plugins.rs`). The test guests are built by
//! `tests/artifacts`, a dev-dependency, so a release build compiles none.

use std::fmt::Write as _;
use std::path::PathBuf;

mod build_wasm;
use build_wasm::{Guest, build_guests, ensure_wasm_target, watch};

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
    Guest {
        name: "ecs",
        package: "ecs-plugin",
        artifact: "ecs_plugin",
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
    watch(&workspace, &["wit", "sdk", "plugins"]);
    println!("cargo:rerun-if-changed=build_wasm.rs");

    ensure_wasm_target();
    let all: Vec<&Guest> = BUILTIN.iter().collect();
    let mut builtin = String::new();
    for (name, path) in build_guests(&workspace, &out_dir, &all) {
        let upper = name.to_uppercase();
        writeln!(
            builtin,
            "pub const {upper}: &[u8] = include_bytes!({path:?});"
        )
        .expect("write to string");
    }
    std::fs::write(out_dir.join("builtin_plugins.rs"), builtin).expect("write builtin_plugins.rs");
}
