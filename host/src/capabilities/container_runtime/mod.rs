//! `host:infra/container-runtime`: containers through the local Docker daemon,
//! with bollard. Granted to the `docker` plugin only.
//!
//! Like processes, output follows live in a table shared by all calls, since
//! each plugin call is a fresh instance.

use crate::contract::host::infra::container_runtime::{
    ContainerSpec, ContainerState, Host, OutputBatch,
};
use crate::contract::{ExitStatus, OutputStream};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, CreateImageOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use super::OUTPUT_BUFFER_LINES;

/// The receiving end of one container's output follow.
type Follow = Arc<tokio::sync::Mutex<mpsc::Receiver<(OutputStream, String)>>>;

/// The daemon connection and the live output follows.
pub struct ContainerTable {
    docker: Result<Docker, String>,
    follows: Mutex<HashMap<String, Follow>>,
    /// Which flow run each container known here belongs to (by id and name).
    owners: Mutex<HashMap<String, String>>,
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
        }
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
        let context = context_dir.to_string();
        let archive = tokio::task::spawn_blocking(move || {
            let mut builder = tar::Builder::new(Vec::new());
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &context)?;
            builder.into_inner()
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

    pub async fn create(&self, spec: ContainerSpec) -> Result<String, String> {
        let host_config = HostConfig {
            network_mode: spec.network_mode.clone(),
            binds: (!spec.mounts.is_empty()).then(|| spec.mounts.clone()),
            memory: spec.memory_limit_bytes.and_then(|m| i64::try_from(m).ok()),
            auto_remove: Some(spec.auto_remove),
            privileged: Some(spec.privileged),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.iter().cloned().collect()),
            host_config: Some(host_config),
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

    fn follow(&self, id: &str) -> Result<Follow, String> {
        let mut follows = self
            .follows
            .lock()
            .map_err(|_| "output table poisoned".to_string())?;
        if let Some(existing) = follows.get(id) {
            return Ok(existing.clone());
        }
        let docker = self.docker()?.clone();
        let (tx, rx) = mpsc::channel(OUTPUT_BUFFER_LINES);
        let container = id.to_string();
        tokio::spawn(async move {
            let options = LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let mut stream = docker.logs(&container, Some(options));
            let mut pending: [String; 2] = Default::default();
            while let Some(Ok(chunk)) = stream.next().await {
                let (index, stream_kind, bytes) = match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        (0, OutputStream::Stdout, message)
                    }
                    LogOutput::StdErr { message } => (1, OutputStream::Stderr, message),
                    LogOutput::StdIn { .. } => continue,
                };
                pending[index].push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = pending[index].find('\n') {
                    let line: String = pending[index].drain(..=end).collect();
                    if tx
                        .send((stream_kind, line.trim_end_matches(['\n', '\r']).to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            for (index, rest) in pending.into_iter().enumerate() {
                if !rest.is_empty() {
                    let kind = if index == 0 {
                        OutputStream::Stdout
                    } else {
                        OutputStream::Stderr
                    };
                    let _ = tx.send((kind, rest)).await;
                }
            }
        });
        let receiver = Arc::new(tokio::sync::Mutex::new(rx));
        follows.insert(id.to_string(), receiver.clone());
        Ok(receiver)
    }

    pub async fn read_output(&self, id: &str, max_wait_ms: u32) -> Result<OutputBatch, String> {
        let follow = self.follow(id)?;
        let (lines, eof) = super::next_batch(&mut *follow.lock().await, max_wait_ms).await;
        if eof && let Ok(mut follows) = self.follows.lock() {
            follows.remove(id);
        }
        Ok(OutputBatch { lines, eof })
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

/// The label that ties a container to the flow run it was created for.
pub const SCOPE_LABEL: &str = "host.run-scope";

impl ContainerTable {
    /// Does container `id` (an id or a name) belong to `scope`?
    async fn belongs(&self, scope: &str, id: &str) -> Result<bool, String> {
        if let Some(owner) = self.owners.lock().ok().and_then(|o| o.get(id).cloned()) {
            return Ok(owner == scope);
        }
        let Some(state) = self.inspect(id).await? else {
            return Ok(false);
        };
        let owner = state
            .labels
            .iter()
            .find(|(k, _)| k == SCOPE_LABEL)
            .map(|(_, v)| v.clone());
        if let Some(owner) = &owner {
            self.remember(owner, [state.id.as_str(), id]);
        }
        Ok(owner.as_deref() == Some(scope))
    }

    /// Notes that the containers known by `names` (id, name) belong to `scope`.
    fn remember<'a>(&self, scope: &str, names: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut owners) = self.owners.lock() {
            for name in names {
                owners.insert(name.to_string(), scope.to_string());
            }
        }
    }

    async fn of_scope(&self, scope: &str) -> Result<Vec<ContainerState>, String> {
        self.list_by_label(SCOPE_LABEL, scope).await
    }

    /// Containers of `scope` that still run.
    pub async fn running(&self, scope: &str) -> Vec<String> {
        match self.of_scope(scope).await {
            Ok(states) => states
                .into_iter()
                .filter(|s| s.running)
                .map(|s| format!("container {}", s.name))
                .collect(),
            Err(e) => vec![format!("cannot list the containers: {e}")],
        }
    }

    /// Stops at once what of `scope` still runs; the containers stay for
    /// `destroy` and `release`.
    pub async fn kill(&self, scope: &str) -> Vec<String> {
        let mut killed = Vec::new();
        if let Ok(states) = self.of_scope(scope).await {
            for state in states.into_iter().filter(|s| s.running) {
                let _ = self.stop(&state.id, 0).await;
                killed.push(format!("container {} killed", state.name));
            }
        }
        killed
    }

    /// Forgets `scope`, after its `destroy`: removes what the plugin left.
    pub async fn release(&self, scope: &str) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(states) = self.of_scope(scope).await {
            for state in states {
                let _ = self.remove(&state.id, true).await;
                left.push(format!("container {} was left behind: removed", state.name));
            }
        }
        if let Ok(mut owners) = self.owners.lock() {
            owners.retain(|_, owner| owner != scope);
        }
        left
    }
}

/// What a grant lets a plugin ask of the container runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// Refuse `privileged: true`.
    pub deny_privileged: bool,
    /// When set, host paths that may be mounted (each mount's source must be
    /// one of these or below one).
    pub mount_sources: Option<Vec<std::path::PathBuf>>,
}

impl ContainerPolicy {
    fn check(&self, spec: &ContainerSpec) -> Result<(), String> {
        if spec.privileged && self.deny_privileged {
            return Err("privileged containers are not allowed by this plugin's grant".into());
        }
        if let Some(allowed) = &self.mount_sources {
            for mount in &spec.mounts {
                let source = std::path::Path::new(mount.split(':').next().unwrap_or(""));
                let inside = source.is_absolute()
                    && !source
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                    && allowed.iter().any(|a| source.starts_with(a));
                if !inside {
                    return Err(format!(
                        "mount {mount:?} is not allowed by this plugin's grant (allowed sources: {})",
                        allowed
                            .iter()
                            .map(|a| a.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Per-call view of the table for the generated bindings: the flow run the
/// call is for, and what the plugin's grant allows.
pub struct ContainerHost {
    table: Arc<ContainerTable>,
    scope: Option<String>,
    policy: ContainerPolicy,
}

impl ContainerHost {
    pub fn new(table: Arc<ContainerTable>, scope: Option<String>, policy: ContainerPolicy) -> Self {
        ContainerHost {
            table,
            scope,
            policy,
        }
    }

    fn scope(&self) -> Result<&str, String> {
        self.scope.as_deref().ok_or_else(|| {
            "the container runtime serves only calls for a flow run (not describe or validate)"
                .to_string()
        })
    }

    /// `id`, when it is a container of this call's flow run.
    async fn ours(&self, id: &str) -> Result<bool, String> {
        self.table.belongs(self.scope()?, id).await
    }

    async fn require(&self, id: &str) -> Result<(), String> {
        if self.ours(id).await? {
            Ok(())
        } else {
            Err(format!("no container {id} was created for this flow run"))
        }
    }
}

impl Host for ContainerHost {
    async fn image_exists(&mut self, image: String) -> Result<bool, String> {
        self.table.image_exists(&image).await
    }
    async fn pull_image(&mut self, image: String) -> Result<(), String> {
        self.table.pull_image(&image).await
    }
    async fn build_image(
        &mut self,
        _context_dir: String,
        _dockerfile: String,
        tag: String,
    ) -> Result<(), String> {
        // A build context is any host directory: `host deploy` builds images,
        // plugins do not.
        Err(format!(
            "build-image ({tag}): plugins may not build images; use `host deploy`"
        ))
    }
    async fn create(&mut self, mut spec: ContainerSpec) -> Result<String, String> {
        let scope = self.scope()?.to_string();
        self.policy.check(&spec)?;
        spec.labels.retain(|(k, _)| k != SCOPE_LABEL);
        spec.labels.push((SCOPE_LABEL.into(), scope.clone()));
        let name = spec.name.clone();
        let id = self.table.create(spec).await?;
        self.table
            .remember(&scope, std::iter::once(id.as_str()).chain(name.as_deref()));
        Ok(id)
    }
    async fn start(&mut self, id: String) -> Result<(), String> {
        self.require(&id).await?;
        self.table.start(&id).await
    }
    async fn read_output(&mut self, id: String, max_wait_ms: u32) -> Result<OutputBatch, String> {
        self.require(&id).await?;
        self.table.read_output(&id, max_wait_ms).await
    }
    async fn wait(&mut self, id: String) -> Result<ExitStatus, String> {
        self.require(&id).await?;
        self.table.wait(&id).await
    }
    async fn inspect(&mut self, id: String) -> Result<Option<ContainerState>, String> {
        if !self.ours(&id).await? {
            return Ok(None);
        }
        self.table.inspect(&id).await
    }
    async fn stop(&mut self, id: String, timeout_seconds: u32) -> Result<(), String> {
        // Another run's container is as good as absent: stopping it is a no-op.
        if !self.ours(&id).await? {
            return Ok(());
        }
        self.table.stop(&id, timeout_seconds).await
    }
    async fn remove(&mut self, id: String, force: bool) -> Result<(), String> {
        if !self.ours(&id).await? {
            return Ok(());
        }
        self.table.remove(&id, force).await
    }
    async fn list_by_label(
        &mut self,
        key: String,
        value: String,
    ) -> Result<Vec<ContainerState>, String> {
        let scope = self.scope()?.to_string();
        let states = self.table.list_by_label(&key, &value).await?;
        Ok(states
            .into_iter()
            .filter(|s| {
                s.labels
                    .iter()
                    .any(|(k, v)| k == SCOPE_LABEL && *v == scope)
            })
            .collect())
    }
}
