//! The control plane's operations: what the API does, independent of HTTP.
//! Each write is one `Store::write` (one transaction); state changes of flow
//! runs are decided by `orchestration` only. Errors are `ApiError`s naming
//! the offending field; the store's and the state machine's own errors
//! convert into it (`crate::error`).
//!
//! A request's writes are not undone when it fails (see `store`), so every
//! operation here checks everything before it writes anything: an error
//! leaves nothing behind.

mod claim;
pub mod dashboard;
mod deployments;
pub mod names;
mod pools;
mod runs;
pub mod schedule_words;
pub mod scheduler;
pub mod schema;
pub mod supervise;
mod tokens;

pub use claim::{ClaimRequest, ClaimResponse};
pub use deployments::{DeploymentSpec, RunRequest, ScheduleUpdate, UpsertOutcome};
pub use pools::{
    PoolPatch, PoolSpec, PoolView, QueuePatch, QueueSpec, QueueView, WorkerHeartbeat, WorkerView,
};
pub use runs::{LogWindow, NewLogLine};
pub use tokens::{
    MAX_POOLS as MAX_TOKEN_POOLS, NewToken, Scope, TokenSpec, TokenView, Verified, token_name,
};

use crate::error::ApiError;
use crate::store::Store;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the control plane knows of each plugin: enough to validate pools
/// and to show people what is installed.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Pool type → default base job template.
    pub templates: BTreeMap<String, Value>,
    /// Pool type → what the plugin says of itself.
    pub plugins: BTreeMap<String, PluginSummary>,
}

/// A loaded plugin as the web UI's Plugins page shows it.
#[derive(Debug, Clone)]
pub struct PluginSummary {
    pub version: String,
    pub contract_version: String,
    pub description: String,
    /// The capability interfaces it imports.
    pub capabilities: Vec<String>,
    /// `built-in` or the file it was loaded from.
    pub source: String,
}

impl Catalog {
    pub fn from_registry(registry: &crate::plugins::Registry) -> Catalog {
        let mut catalog = Catalog::default();
        for plugin in registry.plugins() {
            let info = plugin.info();
            if let Ok(template) = serde_json::from_str(&info.default_base_job_template) {
                catalog
                    .templates
                    .insert(plugin.name().to_string(), template);
            }
            catalog.plugins.insert(
                plugin.name().to_string(),
                PluginSummary {
                    version: info.version.clone(),
                    contract_version: info.contract_version.clone(),
                    description: info.description.clone(),
                    capabilities: plugin
                        .imports()
                        .iter()
                        .map(|c| c.name().to_string())
                        .collect(),
                    source: plugin.source().to_string(),
                },
            );
        }
        catalog
    }

    pub fn default_template(&self, pool_type: &str) -> Result<&Value, ApiError> {
        self.templates.get(pool_type).ok_or_else(|| {
            let known: Vec<&str> = self.templates.keys().map(String::as_str).collect();
            ApiError::bad_request(
                "type",
                format!(
                    "type: unknown pool type `{pool_type}` (known: {})",
                    known.join(", ")
                ),
            )
        })
    }
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// SCHEDULED runs this long past their time are marked Late.
    pub late_after: Duration,
    /// Runs of an OFFLINE worker are DISCONNECTED (outcome unknown); after
    /// this long so, CRASHED. Silence counts only while this server sweeps.
    pub worker_lost_after: Duration,
    /// How long a claim is held without news before it counts as abandoned.
    pub lease: Duration,
    /// Log lines kept per run, whatever workers send; past it one notice
    /// says the rest was dropped.
    pub max_log_lines_per_run: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            late_after: Duration::from_secs(15),
            worker_lost_after: Duration::from_secs(300),
            lease: Duration::from_secs(300),
            max_log_lines_per_run: 1_000_000,
        }
    }
}

#[derive(Clone)]
pub struct Control {
    store: Store,
    catalog: Arc<Catalog>,
    config: Arc<ControlConfig>,
    /// Bumped after every committed change to flow runs, pools or queues, so
    /// long-polls (claim, watch) wake at once instead of polling.
    changes: Arc<watch::Sender<u64>>,
    /// Bumped after log lines are appended (kept apart so chatty runs do not
    /// wake every claim long-poll).
    log_changes: Arc<watch::Sender<u64>>,
    sweep_clock: Arc<scheduler::SweepClock>,
    tasks: Arc<supervise::Tasks>,
    /// The named tokens' HMAC key, once read: made once, never replaced.
    token_key: Arc<std::sync::OnceLock<[u8; 32]>>,
}

impl Control {
    /// How the store is doing: reads may work while writes are refused.
    pub fn storage_health(&self) -> crate::store::Health {
        self.store.health()
    }

    /// What is wrong with the background tasks (a panic), if anything.
    pub fn task_trouble(&self) -> Option<String> {
        self.tasks.trouble()
    }

    /// Where API writes go when another server sharing the database leads
    /// (see `Store::writer_address`).
    pub fn writer_address(&self) -> Option<String> {
        self.store.writer_address()
    }

    /// This server as a replica of a shared database (see `Store::replica`).
    pub fn replica(&self) -> Option<crate::store::Replica> {
        self.store.replica()
    }
}

impl Control {
    pub fn new(store: Store, catalog: Catalog, config: ControlConfig) -> Control {
        let changes = Arc::new(watch::channel(0).0);
        let log_changes = Arc::new(watch::channel(0).0);
        // Another server sharing the database committed: wake this one's
        // long-polls as for its own writes.
        let (remote_changes, remote_logs) = (changes.clone(), log_changes.clone());
        store.on_remote_changes(Box::new(move |committed| {
            let bump = |sender: &watch::Sender<u64>| sender.send_modify(|n| *n = n.wrapping_add(1));
            if committed.records {
                bump(&remote_changes);
            }
            if committed.logs {
                bump(&remote_logs);
            }
        }));
        Control {
            store,
            catalog: Arc::new(catalog),
            config: Arc::new(config),
            changes,
            log_changes,
            sweep_clock: Arc::default(),
            tasks: Arc::default(),
            token_key: Arc::default(),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// Held while a request waits for changes (see `Store::waiting`).
    pub fn waiting(&self) -> crate::store::Waiting {
        self.store.waiting()
    }

    pub fn events(&self) -> &Arc<crate::events::Events> {
        self.store.events()
    }

    /// A read whose refusals are the control plane's (`Store::read` with
    /// the error type fixed, so closures need no annotation).
    fn read<R>(
        &self,
        f: impl FnOnce(&crate::store::Snapshot) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        self.store.read(f)
    }

    /// A write whose refusals are the control plane's (see [`Control::read`]).
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::store::Writer<'_>) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        self.store.write(f).await
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn logs_changed(&self) {
        self.log_changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn now() -> crate::model::Timestamp {
    chrono::Utc::now()
}

/// For PATCH bodies: absent = leave alone, `null` = clear, value = set.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}
