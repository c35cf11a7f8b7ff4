//! `host plugin new`: writes a plugin crate that builds and passes `host
//! plugin test` as it is. The sources are templates in `scaffold/`, kept
//! honest by a test that builds and tests what this writes.

use std::path::{Component, Path, PathBuf};

/// The capability the new plugin's skeleton is built around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Each flow run is a local process (`process` capability).
    Process,
    /// Each flow run is a container (`container-runtime` capability).
    ContainerRuntime,
}

impl Shape {
    pub fn capability(self) -> &'static str {
        match self {
            Shape::Process => "process",
            Shape::ContainerRuntime => "container-runtime",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Shape::Process => include_str!("scaffold/process.rs.txt"),
            Shape::ContainerRuntime => include_str!("scaffold/container-runtime.rs.txt"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "NAME: `{0}` is not a plugin name (lowercase letters, digits and `-`, starting with a letter, at most 40 characters)"
    )]
    Name(String),
    #[error("{0} already exists; choose another name or --dir")]
    Exists(PathBuf),
    #[error(
        "the SDK is not at {0} (this binary was built from sources that moved); pass --sdk with the path of host's sdk/ directory"
    )]
    NoSdk(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The SDK of the sources this binary was built from.
pub fn default_sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Writes the crate `dir/name` and returns its path.
pub fn create(name: &str, shape: Shape, dir: &Path, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    let sdk = std::path::absolute(sdk)
        .ok()
        .and_then(|sdk| sdk.canonicalize().ok())
        .filter(|sdk| sdk.join("Cargo.toml").is_file())
        .ok_or_else(|| ScaffoldError::NoSdk(sdk.to_path_buf()))?;
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let write = |relative: &str, text: String| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap_or(&root))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| ScaffoldError::Write { path, source })
    };
    write("src/lib.rs", shape.source().replace("{{name}}", name))?;
    let absolute_root = std::path::absolute(&root).map_err(|source| ScaffoldError::Write {
        path: root.clone(),
        source,
    })?;
    write(
        "Cargo.toml",
        cargo_toml(name, &relative_path(&absolute_root, &sdk)),
    )?;
    write(".cargo/config.toml", CARGO_CONFIG.to_string())?;
    write(
        "grants.toml",
        format!(
            "# Copy into the plugin directory next to {name}.wasm. A grant is a trust\n\
             # decision: see \"Grants are trust decisions\" in host's docs/PLUGINS.md.\n\
             [{name}]\ncapabilities = [\"{}\"]\n",
            shape.capability()
        ),
    )?;
    write(".gitignore", "/target\n".to_string())?;
    Ok(root)
}

/// The commands that build and test the new crate, for the user.
pub fn next_steps(name: &str, shape: Shape, root: &Path) -> String {
    format!(
        "cd {}\ncargo build --release\nhost plugin test target/wasm32-wasip2/release/{}.wasm --grant {}",
        root.display(),
        name.replace('-', "_"),
        shape.capability()
    )
}

const CARGO_CONFIG: &str = r#"# Plugins are WASI 0.2 components: `cargo build` builds for that target.
[build]
target = "wasm32-wasip2"

# A fresh instance serves each call; a small shadow stack keeps the pages a
# call touches few (see host's docs/decisions/2026-11-22-pooling-allocator-and-small-guest-stack.md).
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#;

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
host-plugin-sdk = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A workspace of its own, wherever the crate is.
[workspace]

[profile.release]
lto = true
strip = true
"#,
        sdk.display()
    )
}

fn valid_name(name: &str) -> bool {
    name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// `to` as seen from the directory `from` (both absolute), so the crate still
/// builds when both move together.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from = normalized(from);
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for component in &to[common..] {
        path.push(component);
    }
    path
}

/// Resolves symlinks in the part of `path` that exists already.
fn normalized(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    resolved.extend(rest.iter().rev());
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        assert_eq!(
            relative_path(Path::new("/a/b/c"), Path::new("/a/x/sdk")),
            PathBuf::from("../../x/sdk")
        );
        assert_eq!(
            relative_path(Path::new("/a"), Path::new("/a/sdk")),
            PathBuf::from("sdk")
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("nice"));
        assert!(valid_name("my-infra2"));
        for bad in ["", "Nice", "2x", "a_b", "a-", "a/b", "..", &"x".repeat(41)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
