//! `host:infra/container-runtime`: containers through the local Docker daemon,
//! with bollard. Granted to the built-in `docker` plugin, and to a plugin of
//! the plugin directory only through its `grants.toml`.
//!
//! Like processes, output follows live in a table shared by all calls, since
//! each plugin call is a fresh instance. `scope` checks that a call acts only
//! on its own run's containers, `policy` what a grant lets a plugin create,
//! `output` follows a container's output.

mod output;
mod policy;
mod scope;

pub use policy::ContainerPolicy;
pub use scope::{ContainerHost, SCOPE_LABEL};

use super::{CallScope, HostCapability, Setup};
use crate::contract::ExitStatus;
use crate::contract::host::infra::container_runtime::{self as wit, ContainerSpec, ContainerState};
use crate::runtime::PluginState;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, CreateImageOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wasmtime::component::{HasSelf, Linker};

pub(crate) struct ContainerRuntime;

impl HostCapability for ContainerRuntime {
    const INTERFACE: &'static str = "container-runtime";
    type Shared = Arc<ContainerTable>;
    type Scoped = ContainerHost;

    fn init(setup: &Setup<'_>) -> anyhow::Result<Arc<ContainerTable>> {
        let positions = setup.work_dir.join("containers");
        Ok(Arc::new(ContainerTable::new().with_positions(positions)))
    }

    fn link(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, HasSelf<ContainerHost>>(linker, |s| {
            &mut s.scopes().container_runtime
        })
    }

    fn scope(table: &Arc<ContainerTable>, call: &CallScope<'_>) -> ContainerHost {
        let policy = call.grants.container_policy().clone();
        ContainerHost::new(table.clone(), call.run.map(String::from), policy)
    }

    async fn running(table: &Arc<ContainerTable>, run: &str) -> Vec<String> {
        table.running(run).await
    }

    async fn kill(table: &Arc<ContainerTable>, run: &str) -> Vec<String> {
        table.kill(run).await
    }

    async fn release(table: &Arc<ContainerTable>, run: &str) -> Vec<String> {
        table.release(run).await
    }
}

/// The daemon connection, the live output follows, and whose each container is.
pub struct ContainerTable {
    docker: Result<Docker, String>,
    follows: Mutex<HashMap<String, output::Follow>>,
    /// The flow run of each container, by the id Docker gave it: a name is
    /// the plugin's to choose and Docker's to resolve, an id is neither.
    owners: Mutex<HashMap<String, String>>,
    /// Where how far each container's output was read is kept, so a
    /// restarted worker goes on from there (none: not kept).
    positions: Option<PathBuf>,
}

fn unavailable(e: impl std::fmt::Display) -> String {
    format!("unavailable: cannot reach the Docker daemon: {e}")
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn describe(error: DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("docker: {message} (HTTP {status_code})"),
        DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError => unavailable(error),
        other => format!("docker: {other}"),
    }
}

/// Exit code and OOM flag in the usual words; 128+N is reported as signal N.
pub fn exit_status(code: Option<i64>, oom_killed: bool) -> ExitStatus {
    let code = code.and_then(|c| i32::try_from(c).ok());
    let signal = code.filter(|c| *c > 128 && *c < 160).map(|c| c - 128);
    let message = match (code, signal, oom_killed) {
        (_, _, true) => format!("killed: out of memory (exit {})", code.unwrap_or(137)),
        (Some(c), Some(s), _) => format!("killed by signal {s} (exit {c})"),
        (Some(c), None, _) => format!("exited with code {c}"),
        (None, _, _) => "ended without an exit code".into(),
    };
    ExitStatus {
        code,
        signal,
        oom_killed,
        message,
    }
}

impl ContainerTable {
    pub fn new() -> Self {
        ContainerTable {
            docker: Docker::connect_with_local_defaults().map_err(unavailable),
            follows: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            positions: None,
        }
    }

    /// Keeps how far each container's output was read under `dir`.
    pub fn with_positions(mut self, dir: PathBuf) -> Self {
        self.positions = Some(dir);
        self
    }

    pub fn docker(&self) -> Result<&Docker, String> {
        self.docker.as_ref().map_err(Clone::clone)
    }

    pub async fn image_exists(&self, image: &str) -> Result<bool, String> {
        match self.docker()?.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(describe(e)),
        }
    }

    pub async fn pull_image(&self, image: &str) -> Result<(), String> {
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut progress = self.docker()?.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            step.map_err(|e| format!("cannot pull {image}: {}", describe(e)))?;
        }
        Ok(())
    }

    pub async fn build_image(
        &self,
        context_dir: &str,
        dockerfile: &str,
        tag: &str,
    ) -> Result<(), String> {
        let (context, file) = (context_dir.to_string(), dockerfile.to_string());
        let archive = tokio::task::spawn_blocking(move || {
            super::build_context::pack(std::path::Path::new(&context), &file)
        })
        .await
        .map_err(|e| format!("cannot pack the build context: {e}"))?
        .map_err(|e| format!("cannot pack the build context {context_dir}: {e}"))?;
        let options = BuildImageOptions {
            dockerfile: dockerfile.to_string(),
            t: Some(tag.to_string()),
            rm: true,
            ..Default::default()
        };
        let body = bollard::body_full(archive.into());
        let mut progress = self.docker()?.build_image(options, None, Some(body));
        while let Some(step) = progress.next().await {
            let info = step.map_err(|e| format!("build of {tag} failed: {}", describe(e)))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(format!("build of {tag} failed: {error}"));
            }
        }
        Ok(())
    }

    /// Creates what `spec` says, nothing more: the spec has no field for
    /// sharing another container's namespaces or volumes (`pid_mode`,
    /// `ipc_mode`, `userns_mode`, `volumes_from`, `links`), so those stay
    /// Docker's private defaults; `network_mode` and mounts are checked by
    /// the policy before this.
    pub async fn create(&self, spec: ContainerSpec) -> Result<String, String> {
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.iter().cloned().collect()),
            host_config: Some(host_config(&spec)),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: spec.name.clone(),
            ..Default::default()
        };
        match self.docker()?.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(e) if status_of(&e) == Some(409) => Err(format!("conflict: {}", describe(e))),
            Err(e) => Err(describe(e)),
        }
    }

    pub async fn start(&self, id: &str) -> Result<(), String> {
        self.docker()?
            .start_container(id, None)
            .await
            .map_err(describe)
    }

    pub async fn wait(&self, id: &str) -> Result<ExitStatus, String> {
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut waiting = self.docker()?.wait_container(id, Some(options));
        let mut waited_code = None;
        while let Some(event) = waiting.next().await {
            match event {
                Ok(response) => waited_code = Some(response.status_code),
                // bollard reports a non-zero exit as an error carrying the code.
                Err(DockerError::DockerContainerWaitError { code, .. }) => waited_code = Some(code),
                Err(e) if status_of(&e) == Some(404) => break,
                Err(e) => return Err(describe(e)),
            }
        }
        match self.inspect(id).await? {
            Some(ContainerState {
                exit: Some(exit), ..
            }) => Ok(exit),
            // Auto-removed already: the wait's code is all there is.
            _ => Ok(exit_status(waited_code, false)),
        }
    }

    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerState>, String> {
        let details = match self.docker()?.inspect_container(id, None).await {
            Ok(details) => details,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(describe(e)),
        };
        let state = details.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let ended = !running
            && state
                .finished_at
                .as_deref()
                .is_some_and(|f| !f.starts_with("0001-"));
        Ok(Some(ContainerState {
            id: details.id.unwrap_or_else(|| id.to_string()),
            name: details
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            running,
            exit: ended.then(|| exit_status(state.exit_code, state.oom_killed.unwrap_or(false))),
            labels: details
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }))
    }

    pub async fn stop(&self, id: &str, timeout_seconds: u32) -> Result<(), String> {
        let options = StopContainerOptions {
            t: i32::try_from(timeout_seconds).ok(),
            signal: None,
        };
        match self.docker()?.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(describe(e)),
        }
    }

    pub async fn remove(&self, id: &str, force: bool) -> Result<(), String> {
        let options = RemoveContainerOptions {
            force,
            v: true,
            link: false,
        };
        match self.docker()?.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // Already being removed (auto-remove): the outcome is the same.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(describe(e)),
        }
    }

    pub async fn list_by_label(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<ContainerState>, String> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{key}={value}")])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = self
            .docker()?
            .list_containers(Some(options))
            .await
            .map_err(describe)?;
        let mut states = Vec::new();
        for summary in summaries {
            if let Some(id) = summary.id
                && let Some(state) = self.inspect(&id).await?
            {
                states.push(state);
            }
        }
        Ok(states)
    }
}

impl Default for ContainerTable {
    fn default() -> Self {
        Self::new()
    }
}

fn host_config(spec: &ContainerSpec) -> HostConfig {
    HostConfig {
        network_mode: spec.network_mode.clone(),
        binds: (!spec.mounts.is_empty()).then(|| spec.mounts.clone()),
        memory: spec.memory_limit_bytes.and_then(|m| i64::try_from(m).ok()),
        auto_remove: Some(spec.auto_remove),
        privileged: Some(spec.privileged),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_cannot_ask_to_share_another_containers_namespaces_or_volumes() {
        let spec = ContainerSpec {
            image: "busybox".into(),
            command: vec![],
            env: vec![],
            labels: vec![],
            name: None,
            network_mode: Some("none".into()),
            mounts: vec![],
            memory_limit_bytes: None,
            auto_remove: false,
            privileged: false,
        };
        let config = host_config(&spec);
        assert_eq!(
            (
                config.pid_mode,
                config.ipc_mode,
                config.userns_mode,
                config.uts_mode,
                config.volumes_from,
                config.links
            ),
            (None, None, None, None, None, None)
        );
    }
}
