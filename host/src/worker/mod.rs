//! `host worker start`: claims a pool's due runs and drives each through the
//! pool type's plugin, reporting states and logs to the server.
//!
//! Two loops talk to the server: the claim loop long-polls for work while it
//! has free slots, and the cancellation loop long-polls (with no free slots
//! asked) so a cancel reaches a busy worker at once. A claim request is never
//! abandoned mid-flight: a claim the worker did not read would leave runs
//! PENDING under its name until recovery.

mod health;
mod logs;
mod run;

pub use logs::LogLimits;

use crate::client::{Client, ClientError};
use crate::control::{ClaimResponse, PoolSpec, PoolView, WorkerHeartbeat};
use crate::metrics::WorkerMetrics;
use crate::model::ClaimedRun;
use crate::plugins::Registry;
use crate::runtime::{LoadedPlugin, Runtime};
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub pool: String,
    pub name: String,
    pub queues: Option<Vec<String>>,
    pub limit: usize,
    /// Create the pool with this type when it does not exist.
    pub pool_type: Option<String>,
    pub run_once: bool,
    pub heartbeat_interval: Duration,
    /// How long one claim long-poll waits.
    pub poll_wait: Duration,
    /// On shutdown, how long in-flight runs may take before the worker leaves
    /// them running (for recovery) and exits.
    pub shutdown_grace: Duration,
    /// Grace given to `stop` on cancel or timeout before it forces.
    pub stop_grace_seconds: u32,
    pub healthcheck: Option<SocketAddr>,
    pub plugin_dir: Option<PathBuf>,
    /// Injected into each run's environment as HOST_API_URL.
    pub api_url: String,
    /// What one run may keep in the server's log.
    pub log_limits: LogLimits,
}

/// The worker's own directory for process runs: stable across its restarts
/// (so it re-attaches to them), shared with no other worker, and apart from
/// other users' (`TMPDIR/host-runs-UID/POOL/NAME`).
pub fn default_work_dir(pool: &str, name: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to this process's effective user.
    let user = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    std::env::temp_dir()
        .join(format!("host-runs-{user}"))
        .join(pool)
        .join(name)
}

/// The default worker name: stable across restarts on one machine, so a
/// restarted worker finds its runs again.
pub fn default_name(pool: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-{pool}")
}

/// What every run task shares.
pub(crate) struct Shared {
    client: Client,
    plugin: Arc<LoadedPlugin>,
    config: WorkerConfig,
    /// One permit per free slot; each run task holds one.
    slots: Arc<Semaphore>,
    /// Cancel signals of the runs in flight.
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// True once in-flight runs should stop being watched (shutdown grace over).
    abandon: watch::Receiver<bool>,
    last_poll: Mutex<Instant>,
    metrics: WorkerMetrics,
}

impl Shared {
    fn polled(&self) {
        if let Ok(mut last) = self.last_poll.lock() {
            *last = Instant::now();
        }
    }

    fn cancel(&self, run_id: &str) -> bool {
        match self
            .cancels
            .lock()
            .ok()
            .and_then(|c| c.get(run_id).cloned())
        {
            Some(sender) => {
                let _ = sender.send(true);
                true
            }
            None => false,
        }
    }
}

/// Retries a call while the server is unreachable or failing (5xx), with
/// backoff; gives up on a 4xx, which retrying cannot fix, and returns it.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    run_id: &str,
    mut call: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.status().is_some_and(|s| s < 500) => {
                tracing::warn!(flow_run_id = run_id, %error, "{what} refused");
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(flow_run_id = run_id, %error, "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs a worker until `shutdown` resolves (or, with `run_once`, until the
/// runs of one claim are done).
pub async fn run_worker(
    client: Client,
    runtime: Runtime,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = ensure_pool(&client, &config).await?;
    let registry = Registry::load(&runtime, config.plugin_dir.as_deref()).await?;
    let plugin = registry.get(&pool.pool.pool_type).ok_or_else(|| {
        anyhow::anyhow!(
            "work pool `{}` is of type `{}`, and this worker has no plugin of that name (available: {})",
            pool.pool.name,
            pool.pool.pool_type,
            registry.names().join(", ")
        )
    })?;
    let (abandon_tx, abandon) = watch::channel(false);
    let shared = Arc::new(Shared {
        client: client.clone(),
        plugin,
        slots: Arc::new(Semaphore::new(config.limit)),
        cancels: Mutex::new(HashMap::new()),
        abandon,
        last_poll: Mutex::new(Instant::now()),
        metrics: WorkerMetrics::new(runtime.call_metrics()),
        config,
    });
    let worker = shared.config.name.clone();
    let pool_name = shared.config.pool.clone();
    while_unavailable("the first heartbeat", || heartbeat(&shared)).await?;
    tracing::info!(pool = %pool_name, worker = %worker, plugin = shared.plugin.name(), limit = shared.config.limit, "worker started");
    let heartbeats = tokio::spawn(heartbeat_loop(shared.clone()));
    let health = match shared.config.healthcheck {
        Some(address) => Some(health::serve(address, shared.clone()).await?),
        None => None,
    };
    recover(&shared).await;

    let (stop_tx, stop) = watch::channel(false);
    let mut claims = tokio::spawn(claim_loop(shared.clone(), stop.clone()));
    let cancellations = tokio::spawn(cancel_loop(shared.clone(), stop));
    tokio::pin!(shutdown);
    let claims_done = tokio::select! {
        _ = &mut shutdown => false,
        _ = &mut claims => true,
    };
    let _ = stop_tx.send(true);
    // An in-flight claim long-poll finishes on its own (see the module docs),
    // and the runs it returns are started like any other.
    if !claims_done {
        tracing::info!(pool = %pool_name, worker = %worker, "waiting for the claim request in flight (at most {:?})", shared.config.poll_wait);
        let _ = claims.await;
    }
    let in_flight = shared.config.limit - shared.slots.available_permits();
    if in_flight > 0 {
        tracing::info!(pool = %pool_name, worker = %worker, in_flight, "waiting for the runs in flight (at most {:?}, then they are left for recovery)", shared.config.shutdown_grace);
    }
    drain(&shared, &abandon_tx).await;
    cancellations.abort();
    heartbeats.abort();
    if let Some(health) = health {
        health.abort();
    }
    tracing::info!(pool = %pool_name, worker = %worker, "worker stopped");
    Ok(())
}

/// Waits for in-flight runs (every slot free again); past the grace period,
/// tells them to let go of their infrastructure and waits for that.
async fn drain(shared: &Shared, abandon: &watch::Sender<bool>) {
    let all = shared.config.limit as u32;
    if tokio::time::timeout(shared.config.shutdown_grace, shared.slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            in_flight = shared.config.limit - shared.slots.available_permits(),
            "shutdown grace over; leaving the remaining runs' infrastructure for recovery"
        );
        let _ = abandon.send(true);
        let _ = shared.slots.acquire_many(all).await;
    }
}

/// Retries while the server answers 503: it is up but cannot reach its
/// database (a PostgreSQL restart), which passes. Anything else is
/// returned: an unreachable server or a refusal at start is the user's to fix.
pub(crate) async fn while_unavailable<T, F, Fut>(what: &str, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match call().await {
            Err(error) if error.status() == Some(503) => {
                tracing::warn!(%error, "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn ensure_pool(client: &Client, config: &WorkerConfig) -> anyhow::Result<PoolView> {
    let path = format!("/api/work-pools/{}", config.pool);
    match while_unavailable("looking up the pool", || client.get::<PoolView>(&path)).await {
        Ok(pool) => {
            if let Some(wanted) = &config.pool_type
                && *wanted != pool.pool.pool_type
            {
                anyhow::bail!(
                    "work pool `{}` is of type `{}`, not `{wanted}`",
                    pool.pool.name,
                    pool.pool.pool_type
                );
            }
            Ok(pool)
        }
        Err(error) if error.status() == Some(404) => {
            let Some(pool_type) = &config.pool_type else {
                anyhow::bail!(
                    "work pool `{}` does not exist; create it, or pass --type to create it",
                    config.pool
                );
            };
            let spec = PoolSpec {
                name: config.pool.clone(),
                pool_type: pool_type.clone(),
                description: String::new(),
                base_job_template: None,
                concurrency_limit: None,
                paused: false,
            };
            match client.post::<_, PoolView>("/api/work-pools", &spec).await {
                Ok(pool) => Ok(pool),
                // Another worker created it first.
                Err(error) if error.status() == Some(409) => Ok(client.get(&path).await?),
                Err(error) => Err(error.into()),
            }
        }
        Err(error) => Err(error.into()),
    }
}

async fn heartbeat(shared: &Shared) -> Result<(), ClientError> {
    let beat = WorkerHeartbeat {
        name: shared.config.name.clone(),
        heartbeat_interval_seconds: shared.config.heartbeat_interval.as_secs().max(1) as u32,
    };
    let path = format!("/api/work-pools/{}/workers/heartbeat", shared.config.pool);
    shared
        .client
        .post::<_, serde_json::Value>(&path, &beat)
        .await
        .map(|_| ())
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(error) = heartbeat(&shared).await {
            tracing::warn!(pool = %shared.config.pool, worker = %shared.config.name, %error, "heartbeat failed");
        }
    }
}

/// Claims while there are free slots, until told to stop (or after one
/// round with `run_once`, once those runs are done).
/// What a claim long-poll may take past its wait before the server counts
/// as gone (its answer, if it comes, is then lost: see `adopt_lost_claims`).
const LONG_POLL_MARGIN: Duration = Duration::from_secs(15);

async fn claim_loop(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    // Set when a claim request failed: its answer may have been lost after
    // the server committed the claim.
    let mut maybe_lost = false;
    loop {
        if *stop.borrow() {
            return;
        }
        // Wait for a free slot without holding it.
        let free = shared.slots.available_permits();
        if free == 0 {
            let mut stop = stop.clone();
            tokio::select! {
                permit = shared.slots.clone().acquire_owned() => drop(permit),
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        let wait = if shared.config.run_once {
            Duration::ZERO
        } else {
            shared.config.poll_wait
        };
        let request = json!({
            "worker": shared.config.name,
            "queues": shared.config.queues,
            "limit": free,
            "wait_ms": wait.as_millis() as u64,
        });
        let path = format!("/api/work-pools/{}/claim", shared.config.pool);
        match shared
            .client
            .with_deadline(wait + LONG_POLL_MARGIN)
            .post::<_, ClaimResponse>(&path, &request)
            .await
        {
            Ok(answer) => {
                backoff = Duration::from_millis(100);
                shared.polled();
                for id in &answer.cancelling {
                    shared.cancel(id);
                }
                for claimed in answer.runs {
                    spawn_run(&shared, claimed);
                }
                // After this answer's runs are registered, so they are not
                // taken for lost ones.
                if std::mem::take(&mut maybe_lost) {
                    adopt_lost_claims(&shared).await;
                }
                if shared.config.run_once {
                    let _ = shared.slots.acquire_many(shared.config.limit as u32).await;
                    return;
                }
            }
            Err(error) => {
                maybe_lost = true;
                tracing::warn!(pool = %shared.config.pool, worker = %shared.config.name, %error, "claim failed; retrying in {backoff:?}");
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Long-polls for cancellations only, so they arrive while every slot is busy.
async fn cancel_loop(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let path = format!("/api/work-pools/{}/claim", shared.config.pool);
    let request = json!({
        "worker": shared.config.name,
        "queues": shared.config.queues,
        "limit": 0,
        "wait_ms": shared.config.poll_wait.as_millis() as u64,
    });
    let client = shared
        .client
        .with_deadline(shared.config.poll_wait + LONG_POLL_MARGIN);
    while !*stop.borrow() {
        match client.post::<_, ClaimResponse>(&path, &request).await {
            Ok(answer) => {
                shared.polled();
                for id in answer.cancelling {
                    if !shared.cancel(&id) {
                        run::cancel_unheld(&shared, &id).await;
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Starts a run's task; it holds one slot until it is done.
fn spawn_run(shared: &Arc<Shared>, claimed: ClaimedRun) {
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        // The server never returns more runs than the free slots asked for.
        tracing::error!(flow_run_id = %claimed.flow_run.id, "claimed a run without a free slot");
        return;
    };
    run_in_slot(shared, claimed, permit, false);
}

/// Drives one run (fresh, or held before a restart when `recovering`) in a
/// task that keeps `permit` until the run is done.
fn run_in_slot(
    shared: &Arc<Shared>,
    claimed: ClaimedRun,
    permit: tokio::sync::OwnedSemaphorePermit,
    recovering: bool,
) {
    let cancel = register_cancel(shared, &claimed.flow_run.id);
    let shared = shared.clone();
    tokio::spawn(async move {
        let _in_flight = shared.metrics.run_in_flight();
        let id = claimed.flow_run.id.clone();
        if recovering {
            run::recover(&shared, claimed, cancel).await;
        } else {
            run::execute(&shared, claimed, cancel).await;
        }
        forget_cancel(&shared, &id);
        drop(permit);
    });
}

fn register_cancel(shared: &Shared, run_id: &str) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    if let Ok(mut cancels) = shared.cancels.lock() {
        cancels.insert(run_id.to_string(), sender);
    }
    receiver
}

fn forget_cancel(shared: &Shared, run_id: &str) {
    if let Ok(mut cancels) = shared.cancels.lock() {
        cancels.remove(run_id);
    }
}

/// Runs the server says this worker claimed that the worker never heard of:
/// a claim committed whose answer was lost (the server died before sending
/// it). Nothing was started for them, so they are started now.
async fn adopt_lost_claims(shared: &Arc<Shared>) {
    let Ok(held) = shared
        .client
        .get::<Vec<ClaimedRun>>(&held_runs_path(shared))
        .await
    else {
        return;
    };
    for claimed in held {
        let known = shared
            .cancels
            .lock()
            .map(|c| c.contains_key(&claimed.flow_run.id))
            .unwrap_or(true);
        if known
            || claimed.flow_run.state.state_type != crate::model::StateType::Pending
            || claimed.flow_run.infrastructure_handle.is_some()
        {
            continue;
        }
        tracing::info!(flow_run_id = %claimed.flow_run.id, "claimed by a request whose answer was lost; starting it");
        let Ok(permit) = shared.slots.clone().acquire_owned().await else {
            return;
        };
        run_in_slot(shared, claimed, permit, false);
    }
}

/// Where the server lists the runs this worker holds.
fn held_runs_path(shared: &Shared) -> String {
    format!(
        "/api/work-pools/{}/workers/{}/runs",
        shared.config.pool, shared.config.name
    )
}

/// Picks up the runs this worker held before a restart.
async fn recover(shared: &Arc<Shared>) {
    let path = held_runs_path(shared);
    let Ok(held) = retry("list held runs", "-", || {
        shared.client.get::<Vec<ClaimedRun>>(&path)
    })
    .await
    else {
        return;
    };
    // Processes of runs that ended (or were cancelled, or deleted) on the
    // server while this worker was away: nothing of them may run on. A run
    // still active elsewhere is left alone (a work dir may be shared).
    for run in shared.plugin.runs_with_processes() {
        if held.iter().any(|claimed| claimed.flow_run.id == run) {
            continue;
        }
        let over = match shared
            .client
            .get::<crate::model::FlowRun>(&format!("/api/flow-runs/{run}"))
            .await
        {
            Ok(stored) => stored.state.state_type.is_terminal(),
            Err(error) => error.status() == Some(404),
        };
        if !over {
            continue;
        }
        let left = shared.plugin.release(&run).await;
        if !left.is_empty() {
            tracing::warn!(flow_run_id = %run, ?left, "processes of a run this worker no longer holds: killed and released");
        }
    }
    for claimed in held {
        tracing::info!(flow_run_id = %claimed.flow_run.id, state = %claimed.flow_run.state.state_type, "recovering run");
        // More held runs than slots wait for a slot, as new claims would.
        let Ok(permit) = shared.slots.clone().acquire_owned().await else {
            return;
        };
        run_in_slot(shared, claimed, permit, true);
    }
}
