//! The plugin runtime: one wasmtime engine, a component cache, grants and
//! per-call limits. Every call gets a fresh instance from an `InstancePre`; a
//! trap, a spent CPU budget or a refused allocation becomes a [`CallError`] for
//! that call, never a panic of the host.
//!
//! Plugins keep no state between calls: what later calls need is in the
//! handle `start` returns, which the worker stores on the run, so any
//! worker process (a restarted one too) can make the next call.

mod cache;
mod call;
mod info;
mod limits;
mod load;
mod plugin;

pub use crate::capabilities::Capability;
pub use crate::contract::{
    ErrorKind, ExitStatus, Job, OutputStream, PluginError, PluginInfo, RunStatus,
};
pub use cache::{CacheOutcome, ComponentCache};
pub use call::{Call, CallError, MAX_HANDLE_BYTES, MAX_MESSAGE_BYTES};
pub use load::{Grants, LoadError};
pub(crate) use plugin::PluginState;
pub use plugin::{LoadedPlugin, PluginSource};

use crate::metrics::PluginCallMetrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capabilities::{ContainerTable, OutputLimits, Setup, Tables};
use crate::supervisor::RunAs;

/// The contract this host speaks: `host:infra@0.1.x`.
pub const CONTRACT_PACKAGE: &str = "host:infra";
pub const CONTRACT_VERSION: &str = "0.1.0";

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Linear memory a plugin instance may use, in bytes.
    pub memory_limit_bytes: usize,
    /// How long a guest may run without calling the host before it is
    /// interrupted. Time blocked in host calls does not count, so a `wait` on a
    /// workload that runs for hours is fine while a spinning guest is stopped.
    pub cpu_budget: Duration,
    /// Plugin instances alive at once (calls in flight, e.g. `wait`s).
    pub max_instances: u32,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Deadline of the calls that are pure or non-blocking by contract:
    /// `describe`, `validate`, `inspect`, `recover`.
    pub quick_call: Duration,
    /// Deadline of `start` and `destroy`; `stop` gets this plus its grace.
    pub slow_call: Duration,
    /// This runtime's own directory for process runs (one per worker, so no
    /// two workers share one); `None`: a fresh one under the temp dir.
    pub work_dir: Option<PathBuf>,
    /// The program that supervises process runs (`host __supervise`); `None`:
    /// this executable.
    pub supervisor: Option<PathBuf>,
    pub output_limits: OutputLimits,
    /// The user process runs' workloads run as (`--run-as`); this
    /// process's own when `None`.
    pub run_as: Option<RunAs>,
    /// Keep what each run's calls send over `http` (for `host plugin
    /// test`'s checks; a worker does not).
    pub record_http: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_limit_bytes: 256 << 20,
            cpu_budget: Duration::from_secs(10),
            max_instances: 1000,
            cache_dir: ComponentCache::default_dir(),
            quick_call: Duration::from_secs(5),
            slow_call: Duration::from_secs(60),
            work_dir: None,
            supervisor: None,
            output_limits: OutputLimits::default(),
            run_as: None,
            record_http: false,
        }
    }
}

/// Per pooled slot: enough for a typical plugin call's heap. Costs at most
/// this much RSS per slot actually used, not per slot configured.
const KEEP_RESIDENT_BYTES: usize = 256 << 10;

/// How often the engine's epoch advances: the granularity of the CPU bound.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Advances the epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the epoch ticker; spinning plugins will not be interrupted");
    }
}

/// Shared by every plugin loaded in this process.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    config: RuntimeConfig,
    cache: ComponentCache,
    /// What each capability keeps for every plugin and run.
    tables: Tables,
    call_metrics: PluginCallMetrics,
    /// The directory made for this runtime alone (no `work_dir` given),
    /// removed with it: `host plugin test` leaves nothing in the temp dir.
    fresh_work_dir: Option<PathBuf>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        if let Some(dir) = &self.fresh_work_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 2)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances * 2)
            .max_memory_size(config.memory_limit_bytes)
            // Reset reused slots with memset rather than madvise, so a fresh
            // instance does not page-fault its way through the heap on every call.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES / 16)
            .async_stack_keep_resident(KEEP_RESIDENT_BYTES / 8);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e:#}"))?;
        spawn_epoch_ticker(&engine);
        let fresh_work_dir = config.work_dir.is_none().then(|| {
            std::env::temp_dir()
                .join("host-runs")
                .join(uuid::Uuid::new_v4().to_string())
        });
        let work_dir = config
            .work_dir
            .clone()
            .or_else(|| fresh_work_dir.clone())
            .unwrap_or_default();
        let tables = Tables::new(&Setup {
            config: &config,
            work_dir: &work_dir,
        })?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                cache: ComponentCache::new(config.cache_dir.clone()),
                config,
                tables,
                call_metrics: PluginCallMetrics::default(),
                fresh_work_dir,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Latency and failures of every plugin call made through this runtime.
    pub fn call_metrics(&self) -> &PluginCallMetrics {
        &self.inner.call_metrics
    }

    pub(crate) fn cache(&self) -> &ComponentCache {
        &self.inner.cache
    }

    pub(crate) fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    /// The Docker connection plugins with `container-runtime` use; also what
    /// `host deploy` builds images with.
    pub fn containers(&self) -> &Arc<ContainerTable> {
        &self.inner.tables.container_runtime
    }
}
