//! The plugins this host can run: the built-ins embedded in the binary, plus
//! every `*.wasm` of a plugin directory. A broken directory plugin is reported
//! and skipped; it never stops the others from loading.

use crate::capabilities::{AwsEndpoints, ContainerPolicy, HttpPolicy};
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
    // Its origins: `[ecs.http]` of grants.toml, else the worker's AWS_*
    // environment (see `builtin_http`).
    Builtin {
        name: "ecs",
        bytes: embedded::ECS,
        grants: &[Capability::Http],
    },
];

/// The file in a plugin directory that grants capabilities, per file stem:
///
/// ```toml
/// [my-plugin]                  # for my-plugin.wasm
/// capabilities = ["container-runtime"]
///
/// [my-plugin.container]        # narrows container-runtime
/// privileged = false           # refuse privileged containers
/// mount_sources = ["/srv/data"] # the only host paths it may mount
/// network_modes = ["host"]     # may share the host's network
///
/// [my-plugin.http]             # the origins `http` may reach; none unless listed
/// max_concurrent_requests = 8  # in flight at once, per plugin call
///
/// [[my-plugin.http.allow]]
/// url = "https://ecs.us-east-1.amazonaws.com"   # scheme://host[:port]
/// auth = "aws-sigv4"           # or "bearer" (token_file), "basic" (credentials_file)
/// aws_service = "ecs"
/// aws_region = "us-east-1"
/// timeout_seconds = 30         # connect, TLS and the response head
/// between_bytes_timeout_seconds = 30
/// max_response_bytes = 16777216
/// # ca_file, client_cert_file, client_key_file: a private endpoint's TLS
/// ```
///
/// A section named after a built-in (`[docker.container]`) narrows the
/// built-in the same way; the built-ins' capabilities themselves are fixed.
/// The built-in docker plugin has `network_modes = ["host"]` unless its
/// section says otherwise.
pub const GRANTS_FILE: &str = "grants.toml";

#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Directory plugins that failed to load, with why.
    failures: Vec<LoadError>,
    /// What in the plugin directory looks like a mistake (and was ignored).
    warnings: Vec<String>,
}

/// One section of `grants.toml`.
struct GrantEntry {
    capabilities: Vec<Capability>,
    container: ContainerPolicy,
    http: HttpPolicy,
}

impl Registry {
    /// Loads the built-ins, then the plugin directory if any.
    pub async fn load(runtime: &Runtime, plugin_dir: Option<&Path>) -> anyhow::Result<Registry> {
        let mut registry = Registry::default();
        let grants = match plugin_dir {
            Some(dir) => read_grants(&dir.join(GRANTS_FILE), true, &mut registry.warnings)?,
            None => HashMap::new(),
        };
        for builtin in BUILTINS {
            let mut policy = grants
                .get(builtin.name)
                .map(|entry| entry.container.clone())
                .unwrap_or_default();
            if builtin.grants.contains(&Capability::ContainerRuntime) {
                // The docker plugin runs a flow's container on the host's
                // network when the API is on the worker's localhost, which the
                // container could not reach otherwise.
                policy.host_network.get_or_insert(true);
            }
            let mut builtin_grants =
                Grants::new(builtin.grants.iter().copied()).with_container_policy(policy);
            if builtin.grants.contains(&Capability::Http) {
                let granted = grants.get(builtin.name).map(|entry| &entry.http);
                let (http, env) = builtin_http(builtin.name, granted, &mut registry.warnings);
                builtin_grants = builtin_grants.with_http_policy(http).with_env(env);
            }
            let plugin = LoadedPlugin::load(
                runtime,
                builtin.name,
                PluginSource::Builtin,
                builtin.bytes,
                builtin_grants,
            )
            .await?;
            registry
                .plugins
                .insert(plugin.name().to_string(), Arc::new(plugin));
        }
        if let Some(dir) = plugin_dir {
            registry.load_dir(runtime, dir, &grants).await?;
        }
        for warning in &registry.warnings {
            tracing::warn!("{warning}");
        }
        Ok(registry)
    }

    async fn load_dir(
        &mut self,
        runtime: &Runtime,
        dir: &Path,
        grants: &HashMap<String, GrantEntry>,
    ) -> anyhow::Result<()> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("plugin directory {}: {e}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        files.sort();
        let stems: Vec<String> = files
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
            .collect();
        let mut unmatched: Vec<&String> = grants
            .keys()
            .filter(|stem| !stems.contains(stem) && !BUILTINS.iter().any(|b| b.name == *stem))
            .collect();
        unmatched.sort();
        for stem in unmatched {
            self.warnings.push(format!(
                "{}: [{stem}] grants capabilities to {stem}.wasm, which is not in {}",
                dir.join(GRANTS_FILE).display(),
                dir.display()
            ));
        }
        for path in files {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let plugin_grants = grants.get(&stem).map_or_else(Grants::log_only, |entry| {
                Grants::new(entry.capabilities.iter().copied())
                    .with_container_policy(entry.container.clone())
                    .with_http_policy(entry.http.clone())
            });
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

    pub fn warnings(&self) -> &[String] {
        &self.warnings
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

/// The grants of a plugin file tested or inspected on its own: the
/// capabilities `names` gives, and its section (by file stem) of
/// `grants_file` when one is given, with what in that file looks wrong.
pub fn file_grants<S: AsRef<str>>(
    plugin: &Path,
    names: &[S],
    grants_file: Option<&Path>,
) -> anyhow::Result<(Grants, Vec<String>)> {
    let mut warnings = Vec::new();
    let named = parse_grants(names)?;
    let Some(grants_file) = grants_file else {
        if named.iter().any(|c| c == Capability::Http) {
            warnings.push(
                "`http` is granted with no origins: every request will be refused (list them in a grants file, --grants FILE)"
                    .to_string(),
            );
        }
        return Ok((named, warnings));
    };
    let stem = plugin
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut entries = read_grants(grants_file, false, &mut warnings)?;
    let Some(entry) = entries.remove(&stem) else {
        anyhow::bail!(
            "{}: has no [{stem}] section for {}",
            grants_file.display(),
            plugin.display()
        );
    };
    let grants = Grants::new(entry.capabilities.iter().copied().chain(named.iter()))
        .with_container_policy(entry.container)
        .with_http_policy(entry.http);
    Ok((grants, warnings))
}

/// `grants.toml`'s sections by plugin file stem; a missing file is no
/// grants when `missing_ok`.
fn read_grants(
    path: &Path,
    missing_ok: bool,
    warnings: &mut Vec<String>,
) -> anyhow::Result<HashMap<String, GrantEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HashMap::new());
        }
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut entries = HashMap::new();
    for (stem, section) in table {
        let at = |key: &str| format!("{}: [{stem}]{key}", path.display());
        let Some(section) = section.as_table() else {
            anyhow::bail!("{}: must be a table", at(""));
        };
        let mut entry = GrantEntry {
            capabilities: Vec::new(),
            container: ContainerPolicy::default(),
            http: HttpPolicy::default(),
        };
        let mut http_section = false;
        for (key, value) in section {
            match key.as_str() {
                "capabilities" => {
                    let names: Vec<String> = value
                        .clone()
                        .try_into()
                        .map_err(|_| anyhow::anyhow!("{}: a list of names", at(" capabilities")))?;
                    entry.capabilities = parse_grants(&names)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", at(" capabilities")))?
                        .iter()
                        .collect();
                }
                "container" => entry.container = container_policy(value, &at, warnings)?,
                "http" => {
                    entry.http = HttpPolicy::from_toml(value, &at, warnings)?;
                    http_section = true;
                }
                other => warnings.push(format!("{}: unknown key `{other}`, ignored", at(""))),
            }
        }
        let builtin_http = BUILTINS
            .iter()
            .any(|b| b.name == stem && b.grants.contains(&Capability::Http));
        if http_section && !builtin_http && !entry.capabilities.contains(&Capability::Http) {
            warnings.push(format!(
                "{}: lists origins, but `http` is not in its capabilities: it can reach none",
                at(".http")
            ));
        }
        entries.insert(stem, entry);
    }
    Ok(entries)
}

/// A built-in HTTP plugin's origins and what it is told about them: the
/// operator's `[NAME.http]` when it lists any, else the endpoints the
/// process's AWS_* environment names, signed with SigV4 (the way the AWS
/// SDKs and Prefect's worker find them). Without either it reaches nothing,
/// and says so in each run's error.
fn builtin_http(
    name: &str,
    granted: Option<&HttpPolicy>,
    warnings: &mut Vec<String>,
) -> (HttpPolicy, Vec<(String, String)>) {
    let aws = AwsEndpoints::from_env(&|var| std::env::var(var).ok());
    let env = aws
        .as_ref()
        .map(AwsEndpoints::plugin_env)
        .unwrap_or_default();
    if let Some(policy) = granted.filter(|p| !p.endpoints.is_empty()) {
        return (policy.clone(), env);
    }
    let Some(aws) = aws else {
        tracing::debug!(
            plugin = name,
            "no AWS_REGION: the plugin is granted no origin"
        );
        return (HttpPolicy::default(), env);
    };
    match aws.policy() {
        Ok(policy) => {
            tracing::info!(plugin = name, ecs = %aws.ecs, logs = %aws.logs, region = %aws.region, "granted the AWS endpoints of the environment");
            (policy, env)
        }
        Err(error) => {
            warnings.push(format!("{name}: {error}; it is granted no origin"));
            (HttpPolicy::default(), env)
        }
    }
}

fn container_policy(
    value: &toml::Value,
    at: &dyn Fn(&str) -> String,
    warnings: &mut Vec<String>,
) -> anyhow::Result<ContainerPolicy> {
    let Some(table) = value.as_table() else {
        anyhow::bail!("{}: must be a table", at(".container"));
    };
    let mut policy = ContainerPolicy::default();
    for (key, value) in table {
        match key.as_str() {
            "privileged" => {
                let allowed = value.as_bool().ok_or_else(|| {
                    anyhow::anyhow!("{}: true or false", at(".container.privileged"))
                })?;
                policy.deny_privileged = !allowed;
            }
            "mount_sources" => {
                let sources: Vec<String> = value.clone().try_into().map_err(|_| {
                    anyhow::anyhow!("{}: a list of paths", at(".container.mount_sources"))
                })?;
                if let Some(relative) = sources.iter().find(|s| !s.starts_with('/')) {
                    anyhow::bail!(
                        "{}: {relative:?} must be an absolute path",
                        at(".container.mount_sources")
                    );
                }
                policy.mount_sources = Some(sources.into_iter().map(PathBuf::from).collect());
            }
            "network_modes" => {
                let modes: Vec<String> = value.clone().try_into().map_err(|_| {
                    anyhow::anyhow!("{}: a list of modes", at(".container.network_modes"))
                })?;
                if let Some(other) = modes.iter().find(|m| *m != "host") {
                    anyhow::bail!(
                        "{}: {other:?} cannot be granted: only \"host\" needs a grant (a container's own networks need none, another run's container is never allowed)",
                        at(".container.network_modes")
                    );
                }
                policy.host_network = Some(!modes.is_empty());
            }
            other => warnings.push(format!(
                "{}: unknown key `{other}`, ignored",
                at(".container")
            )),
        }
    }
    Ok(policy)
}
