//! `host plugin ...` as a user runs it: the real binary, real exit codes.

use crate::common;

use common::guests;
use std::process::{Command, Output};

struct Host {
    cache: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        Host {
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let tmp = self.tmp();
        std::fs::create_dir_all(&tmp).expect("tmp");
        Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .env("HOST_CACHE_DIR", self.cache.path())
            .env("TMPDIR", tmp)
            .env_remove("HOST_PLUGIN_DIR")
            .output()
            .expect("run host")
    }

    fn tmp(&self) -> std::path::PathBuf {
        self.cache.path().join("tmp")
    }

    /// What `host plugin test` left in the temp dir's `host-runs`.
    fn runs_left(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(self.tmp().join("host-runs"))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn plugin_ls_lists_the_builtins_with_their_capabilities() {
    let host = Host::new();
    let out = host.run(&["plugin", "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("process") && l.contains("log, process")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("mock-serverless") && l.contains("built-in")),
        "{text}"
    );

    let out = host.run(&["plugin", "ls", "--output", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["docker", "ecs", "mock-serverless", "process"]);
    assert_eq!(rows[0]["contract_version"], "0.1.0");
}

#[test]
fn plugin_inspect_shows_the_default_base_job_template() {
    let host = Host::new();
    let out = host.run(&["plugin", "inspect", "process", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["name"], "process");
    assert_eq!(
        info["default_base_job_template"]["job_configuration"]["command"],
        "{{ command }}"
    );
    assert!(
        info["default_base_job_template"]["variables"]["properties"]["working_dir"].is_object()
    );

    let out = host.run(&["plugin", "inspect", "no-such-plugin"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(
        "no plugin named `no-such-plugin` (available: docker, ecs, mock-serverless, process)"
    ));
}

#[test]
fn plugin_test_passes_for_the_builtins_and_the_sdk_example() {
    let host = Host::new();
    let mut targets = vec![
        "process",
        "mock-serverless",
        guests::HELLO_EXAMPLE,
        guests::NICE_EXAMPLE,
    ];
    match bwrap_unavailable() {
        None => targets.push(guests::BWRAP_EXAMPLE),
        Some(why) => println!("skipping the bwrap example: {why}"),
    }
    for target in targets {
        let out = host.run(&["plugin", "test", target, "--grant", "process"]);
        assert!(
            out.status.success(),
            "{target}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains("checks passed"), "{}", stdout(&out));
        assert_eq!(
            host.runs_left(),
            Vec::<std::path::PathBuf>::new(),
            "{target}"
        );
    }
}

/// Why bubblewrap cannot make a sandbox here (not installed, no user
/// namespaces), or `None` when it can.
fn bwrap_unavailable() -> Option<String> {
    let out = Command::new("bwrap")
        .args("--unshare-all --ro-bind /usr /usr --symlink usr/lib /lib".split(' '))
        .args("--symlink usr/lib64 /lib64 -- /usr/bin/true".split(' '))
        .output();
    match out {
        Err(e) => Some(format!("bwrap cannot be run: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "bwrap cannot make a sandbox (user namespaces?): {}",
            stderr(&out).trim()
        )),
        Ok(_) => None,
    }
}

#[test]
fn plugin_test_fails_with_a_one_line_reason_for_bad_plugins() {
    let host = Host::new();
    let cases = [
        (guests::TRAP_DESCRIBE, "trapped"),
        (guests::OTHER_WORLD, "not a host infrastructure plugin"),
        (guests::CONTRACT_V2, "host:infra@0.2.0"),
        (
            guests::UNGRANTED_CAPABILITY,
            "imports capability `process`, which is not granted",
        ),
    ];
    for (file, reason) in cases {
        let out = host.run(&["plugin", "test", file]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = stderr(&out);
        assert!(
            err.starts_with("error: ") && err.contains(reason),
            "{file}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    let out = host.run(&[
        "plugin",
        "test",
        guests::UNGRANTED_CAPABILITY,
        "--grant",
        "process",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = host.run(&[
        "plugin",
        "test",
        guests::HELLO_EXAMPLE,
        "--grant",
        "teleport",
    ]);
    assert!(
        stderr(&out).contains("unknown capability `teleport`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plugin_test_names_each_failed_check() {
    let host = Host::new();
    let out = host.run(&["plugin", "test", guests::NONCONFORMING]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAILED  start-wait") && text.contains("exited with code 2"),
        "{text}"
    );
    assert!(
        text.contains("FAILED  stop") && text.contains("stop is not implemented"),
        "{text}"
    );
    assert!(text.contains("ok      describe"), "{text}");
    assert_eq!(
        stderr(&out).trim_end(),
        "error: 2 of 13 checks failed: start-wait, stop"
    );
    assert_eq!(host.runs_left(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn plugin_inspect_takes_a_file_too_and_a_closed_pipe_ends_quietly() {
    let host = Host::new();
    let out = host.run(&[
        "plugin",
        "inspect",
        guests::HELLO_EXAMPLE,
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\"name\": \"hello\""),
        "{}",
        stdout(&out)
    );

    // `host plugin inspect docker --output json | head -c0`: the reader is gone
    // before the first write.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["plugin", "inspect", "docker", "--output", "json"])
        .env("HOST_CACHE_DIR", host.cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_ne!(out.status.code(), Some(101), "{err}");
}

#[test]
fn the_plugin_guide_includes_its_example_files_verbatim() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(workspace.join("docs/PLUGINS.md")).expect("guide");
    let mut checked = 0;
    for part in guide.split("<!-- file: ").skip(1) {
        let (path, rest) = part.split_once(" -->").expect("marker ends with -->");
        let block = rest
            .split_once("```rust\n")
            .and_then(|(_, body)| body.split_once("\n```"))
            .map(|(body, _)| format!("{body}\n"))
            .unwrap_or_else(|| panic!("no rust block after the marker of {path}"));
        let file = std::fs::read_to_string(workspace.join(path)).expect(path);
        assert_eq!(
            block, file,
            "docs/PLUGINS.md shows {path} differently from the file"
        );
        checked += 1;
    }
    assert!(checked >= 1, "the guide includes no example file");
}

/// `host plugin new`, then the README's build and test commands of the crate,
/// unchanged. The build shares a target dir under target/ so reruns are warm.
fn new_plugin_builds_and_passes(host: &Host, name: &str, capability: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf-8");
    let out = host.run(&[
        "plugin",
        "new",
        name,
        "--capability",
        capability,
        "--dir",
        dir_arg,
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("cargo build --release"),
        "{}",
        stdout(&out)
    );
    let root = dir.path().join(name);
    for file in [
        "Cargo.toml",
        ".cargo/config.toml",
        "grants.toml",
        "src/lib.rs",
    ] {
        assert!(root.join(file).is_file(), "{file} not written");
    }

    let mut build = Command::new("cargo");
    build.args(["build", "--release"]).current_dir(&root);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" {
            build.env_remove(&key);
        }
    }
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-new");
    let built = build
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo build");
    assert!(built.status.success(), "{}", stderr(&built));
    let wasm = target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ));
    let out = host.run(&[
        "plugin",
        "test",
        wasm.to_str().expect("utf-8"),
        "--grant",
        capability,
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("13 checks passed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn plugin_new_writes_a_process_plugin_that_builds_and_passes_its_tests() {
    new_plugin_builds_and_passes(&Host::new(), "scaffolded-process", "process");
}

#[test]
fn plugin_new_writes_a_container_plugin_that_builds_and_passes_its_tests() {
    if common::docker::ready("plugin_new_writes_a_container_plugin").is_none() {
        return;
    }
    new_plugin_builds_and_passes(&Host::new(), "scaffolded-container", "container-runtime");
}

#[test]
fn plugin_new_refuses_bad_names_and_existing_directories() {
    let host = Host::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf-8");
    let out = host.run(&["plugin", "new", "Bad_Name", "--dir", dir_arg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`Bad_Name` is not a plugin name"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing written"
    );

    std::fs::create_dir(dir.path().join("taken")).expect("mkdir");
    let out = host.run(&["plugin", "new", "taken", "--dir", dir_arg]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

/// A value the plugin would refuse is refused by the server when the run is
/// created, naming the field: the plugin says it in its schema (here nice's
/// `command` must not be blank), which the server checks; the plugin's
/// `validate` runs only on the worker, after the run was accepted.
#[test]
fn a_value_the_plugins_schema_refuses_is_refused_when_the_run_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::copy(guests::NICE_EXAMPLE, plugins.join("nice.wasm")).expect("copy");
    std::fs::write(
        plugins.join("grants.toml"),
        "[nice]\ncapabilities = [\"process\"]\n",
    )
    .expect("grants");
    let plugin_dir = plugins.to_str().expect("utf-8");
    let server = common::ServerProcess::start(dir.path(), &["--plugin-dir", plugin_dir]);
    let url = server.url.as_str();
    common::host_ok(url, &["work-pool", "create", "--type", "nice", "niced"]);
    common::host_ok(url, &["deployment", "create", "f/nice", "--pool", "niced"]);
    let (code, out, err) = common::host_cli(
        url,
        &[
            "deployment",
            "run",
            "f/nice",
            "--job-variable",
            "command=   ",
        ],
    );
    assert_ne!(code, 0, "a blank command was accepted: {out}");
    assert!(err.contains("job_variables.command"), "{err}");
    let (code, out, err) = common::host_cli(
        url,
        &[
            "deployment",
            "run",
            "f/nice",
            "--job-variable",
            "command=echo fine",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// When the example run fails, `host plugin test` shows what it printed last;
/// when a check leaves something running, what the host then killed.
#[test]
fn plugin_test_shows_a_failing_runs_output_and_what_it_left_running() {
    let host = Host::new();
    let out = host.run(&["plugin", "test", guests::BROKEN_EXIT, "--grant", "process"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let failed = text
        .split_once("FAILED  start-wait")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("start-wait failed: {text}"));
    // Order is kept within a stream; stdout and stderr are separate pipes,
    // so their interleaving is the scheduler's.
    let (promised, last) = (
        failed.find("stdout| promised").expect(&text),
        failed.find("stdout| the last words").expect(&text),
    );
    assert!(promised < last, "in order: {text}");
    assert!(failed.contains("stderr| on stderr"), "{text}");

    let out = host.run(&["plugin", "test", guests::BROKEN_STOP, "--grant", "process"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let failed = text
        .split_once("FAILED  stop")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("stop failed: {text}"));
    assert!(failed.contains("was still running: killed"), "{text}");
    assert_eq!(host.runs_left(), Vec::<std::path::PathBuf>::new());
}
