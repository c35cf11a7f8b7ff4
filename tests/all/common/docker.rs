//! A real Docker daemon for the tests, or a printed reason to skip.

use std::path::Path;
use std::process::Command;

/// The image the tests run: busybox imported from a rootfs they assemble.
pub const TEST_IMAGE: &str = "host-test-busybox:2";

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn find_busybox() -> Option<&'static str> {
    ["/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

/// Ready to run containers: a reachable daemon and the test image. `None`
/// prints why the caller should skip (never a silent pass).
pub fn ready(test: &str) -> Option<()> {
    let reason = match docker(&["info", "--format", "{{.ServerVersion}}"]) {
        Err(e) => Some(format!("no Docker daemon reachable ({e})")),
        Ok(_) => ensure_image().err(),
    };
    match reason {
        None => Some(()),
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}; .ci/run installs and starts dockerd");
            None
        }
    }
}

fn ensure_image() -> Result<(), String> {
    if docker(&["image", "inspect", TEST_IMAGE]).is_ok() {
        return tag_busybox();
    }
    let busybox = find_busybox()
        .ok_or("no static busybox to build the test image from (apt install busybox-static)")?;
    let rootfs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = rootfs.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(|e| e.to_string())?;
    for applet in [
        "sh", "echo", "sleep", "true", "false", "cat", "env", "ls", "printf", "trap",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(|e| e.to_string())?;
    }
    let script = format!(
        "tar -C {} -c . | docker import - {TEST_IMAGE}",
        rootfs.path().display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    tag_busybox()
}

/// The docker plugin's own example uses `busybox:latest`; offer ours under
/// that name only where no real one exists.
fn tag_busybox() -> Result<(), String> {
    if docker(&["image", "inspect", "busybox:latest"]).is_err() {
        docker(&["tag", TEST_IMAGE, "busybox:latest"])?;
    }
    Ok(())
}

/// Ids of containers (running or not) carrying `label=value`.
pub fn containers_with_label(label: &str, value: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--filter", &format!("label={label}={value}")])
        .map(|out| {
            out.lines()
                .map(String::from)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `docker ARGS`: stdout, or stderr as the error.
pub fn run(args: &[&str]) -> Result<String, String> {
    docker(args)
}

pub fn kill(container: &str) -> Result<String, String> {
    docker(&["kill", container])
}

/// Removes every container the test labelled, whatever happened in the test.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers_with_label("host.test", &self.0) {
            let _ = docker(&["rm", "-f", &id]);
        }
    }
}
