//! The plugins this host can run: the built-ins embedded in the binary, plus
//! every `*.wasm` of a plugin directory. A broken directory plugin is reported
//! and skipped; it never stops the others from loading.

use crate::runtime::{Capability, Grants, LoadError, LoadedPlugin, PluginSource, Runtime};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

/// A plugin compiled into the binary, with its fixed grants.
pub struct Builtin {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub grants: &'static [Capability],
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "docker",
        bytes: embedded::DOCKER,
        grants: &[Capability::ContainerRuntime],
    },
    Builtin {
        name: "process",
        bytes: embedded::PROCESS,
        grants: &[Capability::Process],
    },
    Builtin {
        name: "mock-serverless",
        bytes: embedded::MOCK_SERVERLESS,
        grants: &[],
    },
];

/// The file in a plugin directory that grants capabilities, per file stem:
///
/// ```toml
/// [my-plugin]            # for my-plugin.wasm
/// capabilities = ["process"]
/// ```
pub const GRANTS_FILE: &str = "grants.toml";

#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Directory plugins that failed to load, with why.
    failures: Vec<LoadError>,
}

#[derive(serde::Deserialize)]
struct GrantEntry {
    capabilities: Vec<String>,
}

impl Registry {
    /// Loads the built-ins, then the plugin directory if any.
    pub async fn load(runtime: &Runtime, plugin_dir: Option<&Path>) -> anyhow::Result<Registry> {
        let mut registry = Registry::default();
        for builtin in BUILTINS {
            let plugin = LoadedPlugin::load(
                runtime,
                builtin.name,
                PluginSource::Builtin,
                builtin.bytes,
                Grants::new(builtin.grants.iter().copied()),
            )
            .await?;
            registry
                .plugins
                .insert(plugin.name().to_string(), Arc::new(plugin));
        }
        if let Some(dir) = plugin_dir {
            registry.load_dir(runtime, dir).await?;
        }
        Ok(registry)
    }

    async fn load_dir(&mut self, runtime: &Runtime, dir: &Path) -> anyhow::Result<()> {
        let grants = read_grants(dir)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("plugin directory {}: {e}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        files.sort();
        for path in files {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let plugin_grants = grants.get(&stem).cloned().unwrap_or_else(Grants::log_only);
            match load_file(runtime, &path, plugin_grants).await {
                Ok(plugin) if self.plugins.contains_key(plugin.name()) => {
                    self.failures.push(LoadError::Invalid {
                        source_name: path.display().to_string(),
                        message: format!("a plugin named `{}` is already loaded", plugin.name()),
                    });
                }
                Ok(plugin) => {
                    self.plugins
                        .insert(plugin.name().to_string(), Arc::new(plugin));
                }
                Err(error) => {
                    tracing::warn!(%error, "skipping plugin");
                    self.failures.push(error);
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.get(name).cloned()
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    pub fn failures(&self) -> &[LoadError] {
        &self.failures
    }
}

/// Load one plugin file with the given grants.
pub async fn load_file(
    runtime: &Runtime,
    path: &Path,
    grants: Grants,
) -> Result<LoadedPlugin, LoadError> {
    let source_name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
        source_name: source_name.clone(),
        error,
    })?;
    LoadedPlugin::load(
        runtime,
        &source_name,
        PluginSource::File(path.to_path_buf()),
        &bytes,
        grants,
    )
    .await
}

/// Parses a list of capability names, naming the first unknown one.
pub fn parse_grants<S: AsRef<str>>(names: &[S]) -> anyhow::Result<Grants> {
    let capabilities = names
        .iter()
        .map(|name| {
            let name = name.as_ref();
            Capability::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
                anyhow::anyhow!("unknown capability `{name}` (known: {})", known.join(", "))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Grants::new(capabilities))
}

fn read_grants(dir: &Path) -> anyhow::Result<HashMap<String, Grants>> {
    let path = dir.join(GRANTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let entries: HashMap<String, GrantEntry> =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    entries
        .into_iter()
        .map(|(stem, entry)| {
            let grants = parse_grants(&entry.capabilities)
                .map_err(|e| anyhow::anyhow!("{}: [{stem}]: {e}", path.display()))?;
            Ok((stem, grants))
        })
        .collect()
}
