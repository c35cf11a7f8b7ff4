// Compiles guest crates for `wasm32-wasip2` with a nested cargo, the way
// wasmtime builds its test programs. Shared by `host/build.rs` (the built-in
// plugins) and `tests/artifacts/build.rs` (the test guests, the SDK's
// examples).

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the toolchain building us has the `wasm32-wasip2` standard
/// library. `rust-toolchain.toml` names the target, but rustup (1.29 here) does
/// not install a toolchain file's targets by itself, so a fresh machine's first
/// build does it, once, and says so.
pub fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(sysroot) = &sysroot
        && sysroot
            .join("lib/rustlib")
            .join(WASM_TARGET)
            .join("lib")
            .is_dir()
    {
        return;
    }
    println!(
        "cargo:warning=the {WASM_TARGET} target is missing: installing it with `rustup target add {WASM_TARGET}` (once, to build the plugins)"
    );
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", WASM_TARGET]);
    // Set by rustup's cargo proxy: install into the toolchain building us, not
    // the user's default one.
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        outcome => {
            let why = match outcome {
                Ok(status) => format!("rustup exited with {status}"),
                Err(e) => format!("rustup could not be run: {e}"),
            };
            eprintln!(
                "error: the plugins are built for {WASM_TARGET}, which this toolchain lacks, and installing it failed ({why}).\n\
                 Install it by hand with `rustup target add {WASM_TARGET}`, or add the target's standard library to your toolchain."
            );
            std::process::exit(1);
        }
    }
}

/// A guest crate: the package to build and the artifact it produces.
pub struct Guest {
    /// Identifier used for the generated constant and the copied file name.
    pub name: &'static str,
    pub package: &'static str,
    /// Cargo's artifact stem (crate name with `_`, or the bin name).
    pub artifact: &'static str,
}

/// Reruns the build script when anything the guests are built from changes:
/// `sources` (relative to the workspace) and the workspace's manifests.
pub fn watch(workspace: &Path, sources: &[&str]) {
    let manifests = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"];
    for watched in sources.iter().chain(&manifests) {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
}

/// Builds all guests in one cargo invocation (they share dependencies, so one
/// build is much cheaper than one per crate) and copies them into `out_dir`.
///
/// The guests' own target dir sits beside the profiles in the outer target
/// dir (`<target>/wasm-guests`): the host's and the test artifacts' builds,
/// and every profile (a check, a test, a release), share the guests'
/// dependencies instead of each compiling them.
pub fn build_guests(workspace: &Path, out_dir: &Path, guests: &[&Guest]) -> Vec<(String, PathBuf)> {
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(out_dir)
        .join("wasm-guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--profile", "wasm", "--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host target must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        // Under `cargo clippy` this would lint the guests as a side effect.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    for guest in guests {
        command.args(["-p", guest.package]);
    }
    let status = command
        .status()
        .expect("failed to run cargo for the wasm guests");
    assert!(
        status.success(),
        "building the wasm guests failed (see cargo's errors above)"
    );
    guests
        .iter()
        .map(|guest| {
            let built = target_dir
                .join("wasm32-wasip2/wasm")
                .join(format!("{}.wasm", guest.artifact));
            let copied = out_dir.join(format!("{}.wasm", guest.name));
            std::fs::copy(&built, &copied)
                .unwrap_or_else(|e| panic!("missing guest artifact {}: {e}", built.display()));
            (guest.name.to_string(), copied)
        })
        .collect()
}
