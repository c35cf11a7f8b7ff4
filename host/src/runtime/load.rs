//! Checking a candidate plugin before it is instantiated: is it a component, of
//! our world, of a compatible contract version, importing only granted
//! capabilities? Each refusal names what is wrong in one line.

use super::{CONTRACT_PACKAGE, CONTRACT_VERSION};
use crate::capabilities::{Capability, ContainerPolicy, HttpPolicy};
use std::collections::BTreeSet;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The capabilities one plugin may use, and how far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    capabilities: BTreeSet<Capability>,
    container: ContainerPolicy,
    /// Shared by every call of the plugin: built once, at load.
    http: Arc<HttpPolicy>,
    /// Environment variables the plugin itself sees (WASI's), not its
    /// workload's: where the endpoints it was granted are. Never secrets.
    env: Vec<(String, String)>,
}

impl Grants {
    pub fn new(capabilities: impl IntoIterator<Item = Capability>) -> Self {
        let mut set: BTreeSet<Capability> = capabilities.into_iter().collect();
        set.insert(Capability::Log);
        Grants {
            capabilities: set,
            container: ContainerPolicy::default(),
            http: Arc::new(HttpPolicy::default()),
            env: Vec::new(),
        }
    }

    /// What the plugin reads from its (WASI) environment.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Narrows what `container-runtime` may do for this plugin.
    pub fn with_container_policy(mut self, policy: ContainerPolicy) -> Self {
        self.container = policy;
        self
    }

    pub fn container_policy(&self) -> &ContainerPolicy {
        &self.container
    }

    /// The origins `http` may reach, and how. Without it, none.
    pub fn with_http_policy(mut self, policy: HttpPolicy) -> Self {
        self.http = Arc::new(policy);
        self
    }

    pub fn http_policy(&self) -> &Arc<HttpPolicy> {
        &self.http
    }

    /// Only `log`: what a plugin from a directory gets unless configured.
    pub fn log_only() -> Self {
        Grants::new([])
    }

    pub fn contains(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        self.capabilities.iter().copied()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: cannot read the file: {error}")]
    Read {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}: not a WebAssembly file")]
    NotWasm { source_name: String },
    #[error(
        "{source_name}: a core WebAssembly module, not a component; build it for wasm32-wasip2 (see docs/PLUGINS.md)"
    )]
    CoreModule { source_name: String },
    #[error("{source_name}: does not compile: {error}")]
    Compile { source_name: String, error: String },
    #[error(
        "{source_name}: not a host infrastructure plugin: it exports [{exports}], expected {CONTRACT_PACKAGE}/driver@{CONTRACT_VERSION}"
    )]
    WrongWorld {
        source_name: String,
        exports: String,
    },
    #[error(
        "{source_name}: built for contract {found}, this host speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}; rebuild it against a compatible SDK"
    )]
    IncompatibleContract { source_name: String, found: String },
    #[error(
        "{source_name}: imports capability `{capability}`, which is not granted to it (grant it in the plugin directory's grants.toml)"
    )]
    Ungranted {
        source_name: String,
        capability: Capability,
    },
    #[error(
        "{source_name}: imports `{import}`, which needs capability `{capability}`, not granted to it (grant it, with the origins it may reach, in the plugin directory's grants.toml)"
    )]
    UngrantedImport {
        source_name: String,
        import: String,
        capability: Capability,
    },
    #[error("{source_name}: imports `{import}`, which this host does not provide")]
    UnknownImport { source_name: String, import: String },
    #[error("{source_name}: describe failed: {error}")]
    Describe { source_name: String, error: String },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// Refuse what is not a component before handing it to the compiler, whose
/// messages for these cases are long and puzzling.
pub fn check_header(source_name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            source_name: source_name.into(),
        });
    }
    match <[u8; 4]>::try_from(&bytes[4..8]) {
        Ok(COMPONENT_VERSION) => Ok(()),
        Ok(CORE_MODULE_VERSION) => Err(LoadError::CoreModule {
            source_name: source_name.into(),
        }),
        _ => Err(LoadError::NotWasm {
            source_name: source_name.into(),
        }),
    }
}

/// `0.1.3` is compatible with `0.1.0`; `0.2.0` and `1.0.0` are not. Before 1.0
/// the minor version is the breaking one, as in Cargo.
pub fn compatible(version: &str) -> bool {
    let major_minor = |v: &str| {
        let mut parts = v.split('.');
        (
            parts.next().map(str::to_string),
            parts.next().map(str::to_string),
        )
    };
    let (want_major, want_minor) = major_minor(CONTRACT_VERSION);
    let (major, minor) = major_minor(version);
    match want_major.as_deref() {
        Some("0") => major == want_major && minor == want_minor,
        _ => major == want_major,
    }
}

/// Splits `host:infra/driver@0.1.0` into (`driver`, `0.1.0`) when it is ours.
fn our_interface(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(CONTRACT_PACKAGE)?.strip_prefix('/')?;
    rest.split_once('@')
}

/// Checks exports and imports against the contract and the grants; returns
/// the capabilities the component imports.
pub fn check_component(
    engine: &Engine,
    source_name: &str,
    component: &Component,
    grants: &Grants,
) -> Result<BTreeSet<Capability>, LoadError> {
    let mut imported = BTreeSet::new();
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let driver = exports
        .iter()
        .filter_map(|name| our_interface(name).filter(|(iface, _)| *iface == "driver"))
        .map(|(_, version)| version)
        .next();
    match driver {
        Some(version) if compatible(version) => {}
        Some(version) => {
            return Err(LoadError::IncompatibleContract {
                source_name: source_name.into(),
                found: format!("{CONTRACT_PACKAGE}@{version}"),
            });
        }
        None => {
            return Err(LoadError::WrongWorld {
                source_name: source_name.into(),
                exports: exports.join(", "),
            });
        }
    }
    for (import, _) in ty.imports(engine) {
        if let Some(capability) = Capability::for_standard_import(import) {
            if !grants.contains(capability) {
                return Err(LoadError::UngrantedImport {
                    source_name: source_name.into(),
                    import: import.into(),
                    capability,
                });
            }
            imported.insert(capability);
            continue;
        }
        if import.starts_with("wasi:") {
            // Linked with nothing granted: no dirs, no sockets, no env.
            continue;
        }
        let Some((iface, version)) = our_interface(import) else {
            return Err(LoadError::UnknownImport {
                source_name: source_name.into(),
                import: import.into(),
            });
        };
        if !compatible(version) {
            return Err(LoadError::IncompatibleContract {
                source_name: source_name.into(),
                found: format!("{CONTRACT_PACKAGE}@{version}"),
            });
        }
        if iface == "types" {
            continue;
        }
        // A standard interface's capability is not one of our interfaces.
        let ours = Capability::parse(iface).filter(|c| c.standard_package().is_none());
        let Some(capability) = ours else {
            return Err(LoadError::UnknownImport {
                source_name: source_name.into(),
                import: import.into(),
            });
        };
        if !grants.contains(capability) {
            return Err(LoadError::Ungranted {
                source_name: source_name.into(),
                capability,
            });
        }
        imported.insert(capability);
    }
    Ok(imported)
}
