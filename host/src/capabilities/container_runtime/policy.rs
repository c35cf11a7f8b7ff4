//! What a grant lets a plugin ask of the container runtime, checked before
//! `create`: privileged containers, host mounts, the host's network, names.

use crate::contract::host::infra::container_runtime::ContainerSpec;
use std::path::{Path, PathBuf};

/// What a grant lets a plugin ask of the container runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// Refuse `privileged: true`.
    pub deny_privileged: bool,
    /// When set, host paths that may be mounted (each mount's source must
    /// resolve to one of these or below one).
    pub mount_sources: Option<Vec<PathBuf>>,
    /// `network_mode: host`, which shares the machine's network and so its
    /// loopback services. None: the plugin's default (granted to the built-in
    /// docker plugin only, see `plugins.rs`).
    pub host_network: Option<bool>,
}

/// Whose network namespace a container asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Network {
    /// One of its own: Docker's default, `bridge`, `none`, a user network.
    Own,
    /// The machine's (granted).
    Host,
    /// That of container `reference` (a name or id), allowed only for a
    /// container of the same run.
    Container(String),
}

const REFUSED: &str = "is not allowed by this plugin's grant";

impl ContainerPolicy {
    /// Checks `spec` against the grant. Mount sources are replaced by what
    /// they resolve to, so what Docker mounts is what was checked. The
    /// network asked for is returned: only the caller can tell whose
    /// container a `container:` mode names.
    pub fn check(&self, spec: &mut ContainerSpec) -> Result<Network, String> {
        if let Some(name) = &spec.name
            && looks_like_an_id(name)
        {
            // Docker resolves a reference as a full id first, then as a name,
            // then as an id prefix: such a name only serves to be mistaken.
            return Err(format!(
                "container name {name:?} looks like a container id: ids are Docker's to give"
            ));
        }
        if spec.privileged && self.deny_privileged {
            return Err(format!("privileged containers {REFUSED}"));
        }
        if let Some(allowed) = &self.mount_sources {
            spec.mounts = spec
                .mounts
                .iter()
                .map(|mount| resolve_mount(mount, allowed))
                .collect::<Result<_, _>>()?;
        }
        match spec.network_mode.as_deref() {
            Some("host") if self.host_network == Some(true) => Ok(Network::Host),
            Some("host") => Err(format!(
                "network_mode \"host\" {REFUSED} (grant it with network_modes = [\"host\"])"
            )),
            Some(mode) if mode.starts_with("service:") => Err(format!(
                "network_mode {mode:?}: not a Docker network mode (that is Compose's)"
            )),
            Some(mode) => match mode.strip_prefix("container:") {
                Some(reference) => Ok(Network::Container(reference.to_string())),
                None => Ok(Network::Own),
            },
            None => Ok(Network::Own),
        }
    }
}

/// All hex, as long as a short (12) or full (64) id or anything between.
fn looks_like_an_id(name: &str) -> bool {
    let name = name.trim_start_matches('/');
    (12..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `mount` ("source:target[:options]") with its source resolved, symlinks
/// followed, when that stays inside one of `allowed` (also resolved).
fn resolve_mount(mount: &str, allowed: &[PathBuf]) -> Result<String, String> {
    let (source, rest) = mount.split_once(':').unwrap_or((mount, ""));
    let refuse = |why: String| {
        Err(format!(
            "mount {mount:?} {REFUSED}: {why} (allowed sources: {})",
            allowed
                .iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    let source = Path::new(source);
    if !source.is_absolute() {
        return refuse(format!("{} is not an absolute host path", source.display()));
    }
    let resolved = match std::fs::canonicalize(source) {
        Ok(resolved) => resolved,
        // Docker would create it, as root, wherever the path leads.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return refuse(format!("{} does not exist", source.display()));
        }
        Err(e) => return refuse(format!("{} cannot be resolved: {e}", source.display())),
    };
    let inside = allowed
        .iter()
        .filter_map(|a| std::fs::canonicalize(a).ok())
        .any(|a| resolved.starts_with(a));
    if !inside {
        return refuse(format!(
            "{} resolves to {}",
            source.display(),
            resolved.display()
        ));
    }
    let resolved = resolved.to_string_lossy();
    if resolved.contains(':') {
        return refuse(format!("{resolved} holds a ':'"));
    }
    Ok(if rest.is_empty() {
        resolved.into_owned()
    } else {
        format!("{resolved}:{rest}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: Option<&str>, network: Option<&str>, mounts: &[String]) -> ContainerSpec {
        ContainerSpec {
            image: "busybox".into(),
            command: vec![],
            env: vec![],
            labels: vec![],
            name: name.map(String::from),
            network_mode: network.map(String::from),
            mounts: mounts.to_vec(),
            memory_limit_bytes: None,
            auto_remove: false,
            privileged: false,
        }
    }

    #[test]
    fn names_like_ids_and_the_hosts_network_without_a_grant_are_refused() {
        let policy = ContainerPolicy::default();
        let id = "a".repeat(64);
        for name in [id.as_str(), "0123456789ab"] {
            let error = policy.check(&mut spec(Some(name), None, &[])).unwrap_err();
            assert!(error.contains("looks like a container id"), "{error}");
        }
        assert_eq!(
            policy.check(&mut spec(Some("deadbeef"), None, &[])),
            Ok(Network::Own)
        );
        let error = policy
            .check(&mut spec(None, Some("host"), &[]))
            .unwrap_err();
        assert!(error.contains("network_modes"), "{error}");
        assert!(
            policy
                .check(&mut spec(None, Some("service:db"), &[]))
                .is_err()
        );
        assert_eq!(
            policy.check(&mut spec(None, Some("container:x"), &[])),
            Ok(Network::Container("x".into()))
        );
        let granted = ContainerPolicy {
            host_network: Some(true),
            ..ContainerPolicy::default()
        };
        assert_eq!(
            granted.check(&mut spec(None, Some("host"), &[])),
            Ok(Network::Host)
        );
    }

    #[test]
    fn mount_sources_are_resolved_before_the_check_and_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = dir.path().join("allowed");
        std::fs::create_dir_all(allowed.join("data")).expect("dirs");
        std::os::unix::fs::symlink("/", allowed.join("root")).expect("symlink");
        let policy = ContainerPolicy {
            mount_sources: Some(vec![allowed.clone()]),
            ..ContainerPolicy::default()
        };
        let at = |p: &str| format!("{}/{p}:/mnt:ro", allowed.display());
        for (mount, why) in [
            (at("root/etc"), "resolves to /etc"),
            (at("missing"), "does not exist"),
            (at("data/../../.."), "resolves to"),
            ("relative:/mnt".to_string(), "not an absolute"),
        ] {
            let error = policy.check(&mut spec(None, None, &[mount])).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        let mut ok = spec(None, None, &[at("data")]);
        policy.check(&mut ok).expect("inside");
        let real = std::fs::canonicalize(allowed.join("data")).expect("canonical");
        assert_eq!(ok.mounts, [format!("{}:/mnt:ro", real.display())]);
    }
}
