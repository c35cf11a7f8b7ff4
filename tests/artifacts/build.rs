//! Builds the test guests and the SDK's examples for `wasm32-wasip2` and
//! names each built file in a constant (`test_guests.rs`). A dev-dependency
//! of the host, so only tests and benches build them.

use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "../../host/build_wasm.rs"]
mod build_wasm;
use build_wasm::{Guest, build_guests, ensure_wasm_target, watch};

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
        name: "http_client",
        package: "guest-http-client",
        artifact: "guest_http_client",
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
        .ancestors()
        .nth(2)
        .expect("tests/artifacts lives in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    watch(&workspace, &["wit", "sdk", "tests/guests"]);
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("host/build_wasm.rs").display()
    );

    ensure_wasm_target();
    let all: Vec<&Guest> = TEST_GUESTS.iter().collect();
    let mut constants = String::new();
    for (name, path) in build_guests(&workspace, &out_dir, &all) {
        let upper = name.to_uppercase();
        writeln!(constants, "pub const {upper}: &str = {path:?};").expect("write to string");
    }
    std::fs::write(out_dir.join("test_guests.rs"), constants).expect("write test_guests.rs");
}
