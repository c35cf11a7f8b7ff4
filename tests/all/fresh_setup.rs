//! The README's run command works as written on a machine whose toolchain
//! lacks the `wasm32-wasip2` target: a clean clone, built with a copy of this
//! machine's rustup home from which the target was removed, serves
//! `/api/health`, and the build said it installed the target.
//!
//! The build's target dir is kept under `target/fresh-setup` so that only the
//! first run on a machine is a cold build.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TARGET: &str = "wasm32-wasip2";

#[test]
fn the_readme_run_command_installs_the_wasm_target_and_serves() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fresh-setup scaffolding");
    let Some(toolchain) = active_toolchain(workspace) else {
        println!("SKIPPED: this machine's Rust toolchain is not managed by rustup");
        return;
    };
    let scratch = workspace.join("target/fresh-setup");
    std::fs::create_dir_all(&scratch).expect("fresh-setup scaffolding");
    let temp = tempfile::tempdir_in(&scratch).expect("fresh-setup scaffolding");

    // A clean clone at a fixed path, so the cached target dir stays warm.
    let clone = scratch.join("clone");
    let _ = std::fs::remove_dir_all(&clone);
    run(Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(workspace)
        .arg(&clone));

    let rustup_home = temp.path().join("rustup");
    let sysroot = rustup_home_without_target(&toolchain, &rustup_home);
    assert!(!sysroot.join("lib/rustlib").join(TARGET).exists());

    let run_command = readme_command(&workspace.join("README.md"), "<!-- run-command -->");
    let port = free_port();
    let log_path = temp.path().join("run.log");
    let log = std::fs::File::create(&log_path).expect("fresh-setup scaffolding");
    let mut server = Command::new("bash");
    server
        .args(["-c", &format!("exec {run_command}")])
        .current_dir(&clone)
        .env("RUSTUP_HOME", &rustup_home)
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        .env("HOST_PORT", port.to_string())
        .env("HOST_DATA_DIR", temp.path().join("data"))
        .stdout(log.try_clone().expect("fresh-setup scaffolding"))
        .stderr(log)
        .stdin(Stdio::null());
    // What cargo set for this test must not leak into the user's command.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let from_cargo = key.starts_with("CARGO_") && key != "CARGO_HOME";
        if from_cargo || key == "RUSTUP_TOOLCHAIN" || key == "RUSTC" || key == "CARGO" {
            server.env_remove(&key);
        }
    }
    // Nor may a toolchain's own bin dir stand in for rustup's proxies.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::split_paths(&path).filter(|dir| !dir.to_string_lossy().contains("/toolchains/"));
    server.env(
        "PATH",
        std::env::join_paths(path).expect("fresh-setup scaffolding"),
    );
    let mut child = server.spawn().expect("fresh-setup scaffolding");

    let deadline = Instant::now() + Duration::from_secs(45 * 60);
    let mut health = None;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("fresh-setup scaffolding") {
            panic!(
                "the run command exited with {status} before serving:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if let Some(answer) = get(port, "/api/health") {
            health = Some(answer);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let health = health.unwrap_or_else(|| panic!("never served /api/health:\n{output}"));
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(
        output.contains(&format!("the {TARGET} target is missing: installing it")),
        "the build did not say it installed the target:\n{output}"
    );
    assert!(
        sysroot
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
    );
}

/// The directory of the toolchain that builds this workspace, if rustup has one.
fn active_toolchain(workspace: &Path) -> Option<PathBuf> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(workspace)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .ok()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let sysroot = sysroot.canonicalize().ok()?;
    let toolchains = sysroot.parent()?;
    (toolchains.file_name()? == "toolchains").then_some(sysroot)
}

/// Builds a rustup home holding a copy of `toolchain`, from which rustup
/// itself then removes the wasm target, and returns the copy's sysroot. Files
/// are hard links (cheap), except the ones rustup rewrites, which are real
/// copies so the machine's own toolchain stays untouched.
fn rustup_home_without_target(toolchain: &Path, rustup_home: &Path) -> PathBuf {
    let name = toolchain
        .file_name()
        .expect("fresh-setup scaffolding")
        .to_string_lossy()
        .into_owned();
    let sysroot = rustup_home.join("toolchains").join(&name);
    std::fs::create_dir_all(sysroot.parent().expect("fresh-setup scaffolding"))
        .expect("fresh-setup scaffolding");
    run(Command::new("cp").arg("-al").arg(toolchain).arg(&sysroot));
    for entry in std::fs::read_dir(sysroot.join("lib/rustlib")).expect("fresh-setup scaffolding") {
        let path = entry.expect("fresh-setup scaffolding").path();
        if path.is_file() {
            let text = std::fs::read(&path).expect("fresh-setup scaffolding");
            std::fs::remove_file(&path).expect("fresh-setup scaffolding");
            std::fs::write(&path, text).expect("fresh-setup scaffolding");
        }
    }
    std::fs::write(
        rustup_home.join("settings.toml"),
        format!("version = \"12\"\ndefault_toolchain = \"{name}\"\nprofile = \"default\"\nauto_self_update = \"disable\"\n"),
    )
    .expect("fresh-setup scaffolding");
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        run(Command::new("rustup")
            .args(["target", "remove", TARGET, "--toolchain", &name])
            .env("RUSTUP_HOME", rustup_home)
            .env_remove("RUSTUP_TOOLCHAIN"));
    }
    sysroot
}

/// The command in the fenced block after `marker` in the README.
fn readme_command(readme: &Path, marker: &str) -> String {
    let text = std::fs::read_to_string(readme).expect("fresh-setup scaffolding");
    let after = text.split(marker).nth(1).expect("README has the marker");
    after
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("```"))
        .expect("a command after the marker")
        .to_string()
}

fn run(command: &mut Command) {
    let status = command.status().expect("fresh-setup scaffolding");
    assert!(status.success(), "{command:?} failed: {status}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("fresh-setup scaffolding")
        .local_addr()
        .expect("fresh-setup scaffolding")
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}
