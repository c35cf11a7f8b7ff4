//! Every call acts for one flow run, on that run's containers only.
//!
//! A container is the run's when its id says so: the id `create` returned
//! (recorded here), or the `host.run-scope` label the host set at create.
//! A reference from a plugin (an id or a name) is resolved to an id once,
//! that id is checked, and the call acts on that id: a name is the plugin's
//! to choose and could resolve to another container the next time.

use super::policy::{ContainerPolicy, Network};
use super::{ContainerTable, output};
use crate::contract::ExitStatus;
use crate::contract::host::infra::container_runtime::{
    ContainerSpec, ContainerState, Host, OutputBatch,
};
use std::sync::Arc;

/// The label that ties a container to the flow run it was created for.
pub const SCOPE_LABEL: &str = "host.run-scope";

fn scope_of(state: &ContainerState) -> Option<&str> {
    state
        .labels
        .iter()
        .find(|(k, _)| k == SCOPE_LABEL)
        .map(|(_, v)| v.as_str())
}

impl ContainerTable {
    /// The id of the container `reference` names, when it belongs to `scope`.
    async fn resolve(&self, scope: &str, reference: &str) -> Result<Option<String>, String> {
        // An id this table recorded: Docker matches a full id before any
        // name, so acting on it reaches exactly that container.
        if let Some(owner) = self.owner(reference) {
            return Ok((owner == scope).then(|| reference.to_string()));
        }
        let Some(state) = self.inspect(reference).await? else {
            return Ok(None);
        };
        let owner = match self.owner(&state.id) {
            Some(owner) => Some(owner),
            None => scope_of(&state).map(String::from),
        };
        if let Some(owner) = &owner {
            self.remember(owner, &state.id);
        }
        Ok((owner.as_deref() == Some(scope)).then_some(state.id))
    }

    fn owner(&self, id: &str) -> Option<String> {
        self.owners.lock().ok().and_then(|o| o.get(id).cloned())
    }

    /// Notes that the container with id `id` belongs to `scope`.
    fn remember(&self, scope: &str, id: &str) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.insert(id.to_string(), scope.to_string());
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
        let ids: Vec<String> = match self.owners.lock() {
            Ok(mut owners) => {
                let ids = owners
                    .iter()
                    .filter(|(_, owner)| *owner == scope)
                    .map(|(id, _)| id.clone())
                    .collect();
                owners.retain(|_, owner| owner != scope);
                ids
            }
            Err(_) => Vec::new(),
        };
        self.forget_output(scope, &ids);
        left
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

    /// The id of `reference`, when it is a container of this call's run.
    async fn ours(&self, reference: &str) -> Result<Option<String>, String> {
        self.table.resolve(self.scope()?, reference).await
    }

    async fn require(&self, reference: &str) -> Result<String, String> {
        self.ours(reference)
            .await?
            .ok_or_else(|| format!("no container {reference} was created for this flow run"))
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
        let policy = self.policy.clone();
        // Resolving mount sources touches the file system.
        let (checked, mut spec) = tokio::task::spawn_blocking(move || {
            let checked = policy.check(&mut spec);
            (checked, spec)
        })
        .await
        .map_err(|e| format!("cannot check the container spec: {e}"))?;
        if let Network::Container(reference) = checked? {
            // Sharing a network namespace shares its loopback services.
            let Some(id) = self.ours(&reference).await? else {
                return Err(format!(
                    "network_mode \"container:{reference}\": no container {reference} was created for this flow run"
                ));
            };
            spec.network_mode = Some(format!("container:{id}"));
        }
        spec.labels.retain(|(k, _)| k != SCOPE_LABEL);
        spec.labels.push((SCOPE_LABEL.into(), scope.clone()));
        let id = self.table.create(spec).await?;
        self.table.remember(&scope, &id);
        Ok(id)
    }
    async fn start(&mut self, id: String) -> Result<(), String> {
        let id = self.require(&id).await?;
        self.table.start(&id).await
    }
    async fn read_output(&mut self, id: String, max_wait_ms: u32) -> Result<OutputBatch, String> {
        let id = self.require(&id).await?;
        let scope = self.scope()?.to_string();
        output::read(&self.table, &scope, &id, max_wait_ms).await
    }
    async fn wait(&mut self, id: String) -> Result<ExitStatus, String> {
        let id = self.require(&id).await?;
        self.table.wait(&id).await
    }
    async fn inspect(&mut self, id: String) -> Result<Option<ContainerState>, String> {
        match self.ours(&id).await? {
            Some(id) => self.table.inspect(&id).await,
            None => Ok(None),
        }
    }
    async fn stop(&mut self, id: String, timeout_seconds: u32) -> Result<(), String> {
        // Another run's container is as good as absent: stopping it is a no-op.
        match self.ours(&id).await? {
            Some(id) => self.table.stop(&id, timeout_seconds).await,
            None => Ok(()),
        }
    }
    async fn remove(&mut self, id: String, force: bool) -> Result<(), String> {
        match self.ours(&id).await? {
            Some(id) => self.table.remove(&id, force).await,
            None => Ok(()),
        }
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
            .filter(|s| scope_of(s) == Some(scope.as_str()))
            .collect())
    }
}
