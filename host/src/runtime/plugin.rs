//! One loaded plugin: its pre-instantiated component and the typed calls of the
//! `driver` interface, each in a fresh store with its own limits.
//!
//! A call's WASI context has nothing open (no preopened directories, no
//! sockets, no environment) and the linker holds only the capabilities the
//! plugin was granted: it reaches the world through nothing else. Every call but
//! `wait` has a wall-clock deadline, because the CPU bound counts only
//! time without host calls and cannot stop a plugin that loops calling
//! the host.

use super::call::{Call, CallError, MAX_HANDLE_BYTES, bounded_exit, bounded_status, plugin_error};
use super::info::{placeholder_info, validate_info};
use super::limits::MemoryCap;
use super::load::{self, Grants, LoadError};
use super::{CacheOutcome, ExitStatus, Job, PluginError, PluginInfo, RunStatus, Runtime};
use crate::capabilities::Capability;
use crate::capabilities::{self, CallScope, OutputSink, Scopes};
use crate::contract::{Plugin, PluginPre};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Where a plugin came from, for `host plugin ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    Builtin,
    File(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Builtin => f.write_str("built-in"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Everything one store holds. A store lives for one call.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    stderr: MemoryOutputPipe,
    scopes: Scopes,
    /// Calls into the host so far; the CPU bound restarts its count at each.
    host_calls: u64,
    /// `host_calls` when the epoch callback last looked.
    seen_host_calls: u64,
    /// Epoch ticks the guest has been running without a host call.
    spinning_ticks: u64,
    cpu_exceeded: bool,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Every WASI call goes through here: it counts as calling the host.
        self.host_calls += 1;
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl PluginState {
    /// What the capabilities' linked functions reach their state through:
    /// each such call counts as calling the host.
    pub(crate) fn scopes(&mut self) -> &mut Scopes {
        self.host_calls += 1;
        &mut self.scopes
    }

    /// The same, with the resource table, for a capability whose resources
    /// live beside WASI's (`wasi:http`'s bodies are `wasi:io` streams).
    pub(crate) fn scopes_and_table(&mut self) -> (&mut Scopes, &mut ResourceTable) {
        self.host_calls += 1;
        (&mut self.scopes, &mut self.table)
    }
}

type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// A plugin ready to be called: checked, compiled, linked against its grants.
pub struct LoadedPlugin {
    runtime: Runtime,
    info: PluginInfo,
    source: PluginSource,
    grants: Grants,
    /// The capability interfaces the component imports.
    imports: BTreeSet<Capability>,
    pre: PluginPre<PluginState>,
    cache_outcome: CacheOutcome,
}

/// Keeps a guest's stderr (panic messages) for error reports, bounded.
const STDERR_CAPACITY: usize = 4096;

impl LoadedPlugin {
    /// Check, compile (or read from the cache), link and `describe` a plugin.
    pub async fn load(
        runtime: &Runtime,
        source_name: &str,
        source: PluginSource,
        bytes: &[u8],
        grants: Grants,
    ) -> Result<LoadedPlugin, LoadError> {
        load::check_header(source_name, bytes)?;
        let engine = runtime.engine();
        let (component, cache_outcome) =
            runtime
                .cache()
                .load(engine, bytes)
                .map_err(|e| LoadError::Compile {
                    source_name: source_name.into(),
                    error: format!("{e:#}"),
                })?;
        let imports = load::check_component(engine, source_name, &component, &grants)?;
        let linker = linker_for(runtime, &grants).map_err(|e| LoadError::Invalid {
            source_name: source_name.into(),
            message: format!("{e:#}"),
        })?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| LoadError::Invalid {
                source_name: source_name.into(),
                message: format!("{e:#}"),
            })?;
        let mut plugin = LoadedPlugin {
            runtime: runtime.clone(),
            info: placeholder_info(source_name),
            source,
            grants,
            imports,
            pre,
            cache_outcome,
        };
        let info = plugin.describe().await.map_err(|e| LoadError::Describe {
            source_name: source_name.into(),
            error: e.to_string(),
        })?;
        validate_info(source_name, &info, &plugin.grants)?;
        plugin.info = info;
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// What `describe` said when the plugin was loaded.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn source(&self) -> &PluginSource {
        &self.source
    }

    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The capability interfaces the component really imports (whatever
    /// `describe` says).
    pub fn imports(&self) -> &BTreeSet<Capability> {
        &self.imports
    }

    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache_outcome
    }

    /// Calls `describe` in a fresh instance (the cached [`LoadedPlugin::info`]
    /// is what callers normally want; this is for tests and benchmarks).
    pub async fn describe(&self) -> Result<PluginInfo, CallError> {
        self.call(Call::Describe, None, discard(), |p, s| {
            Box::pin(p.host_infra_driver().call_describe(s))
        })
        .await
    }

    /// Pure by contract: no capability serves it.
    pub async fn validate(&self, configuration: &str) -> Result<(), CallError> {
        let configuration = configuration.to_string();
        let result = self
            .call(Call::Validate, None, discard(), move |p, s| {
                Box::pin(
                    async move { p.host_infra_driver().call_validate(s, &configuration).await },
                )
            })
            .await?;
        result.map_err(self.refused(Call::Validate))
    }

    /// The capabilities serve this call, and every later one for the same
    /// run, as the run `job.flow_run_id`.
    pub async fn start(&self, job: Job) -> Result<String, CallError> {
        let run = job.flow_run_id.clone();
        let result = self
            .call(Call::Start, Some(run), discard(), move |p, s| {
                Box::pin(async move { p.host_infra_driver().call_start(s, &job).await })
            })
            .await?;
        let handle = result.map_err(self.refused(Call::Start))?;
        if handle.len() > MAX_HANDLE_BYTES {
            let metrics = self.runtime.call_metrics();
            metrics.failed(&self.info.name, Call::Start.name(), "contract");
            return Err(CallError::Contract {
                plugin: self.info.name.clone(),
                call: Call::Start.name(),
                message: format!(
                    "it returned a handle of {} bytes; the limit is {MAX_HANDLE_BYTES}",
                    handle.len()
                ),
            });
        }
        Ok(handle)
    }

    /// Blocks until the infrastructure ends; its output goes to `sink`. No
    /// deadline: the caller drops the future to stop waiting.
    pub async fn wait(
        &self,
        run: &str,
        handle: &str,
        sink: Arc<dyn OutputSink>,
    ) -> Result<ExitStatus, CallError> {
        let handle = handle.to_string();
        let result = self
            .call(Call::Wait, Some(run.into()), sink, move |p, s| {
                Box::pin(async move { p.host_infra_driver().call_wait(s, &handle).await })
            })
            .await?;
        result.map(bounded_exit).map_err(self.refused(Call::Wait))
    }

    pub async fn inspect(&self, run: &str, handle: &str) -> Result<RunStatus, CallError> {
        let handle = handle.to_string();
        let result = self
            .call(Call::Inspect, Some(run.into()), discard(), move |p, s| {
                Box::pin(async move { p.host_infra_driver().call_inspect(s, &handle).await })
            })
            .await?;
        result
            .map(bounded_status)
            .map_err(self.refused(Call::Inspect))
    }

    pub async fn stop(&self, run: &str, handle: &str, grace_seconds: u32) -> Result<(), CallError> {
        let handle = handle.to_string();
        let result = self
            .call_within(
                Call::Stop,
                self.runtime.config().slow_call + Duration::from_secs(grace_seconds.into()),
                Some(run.into()),
                discard(),
                move |p, s| {
                    Box::pin(async move {
                        p.host_infra_driver()
                            .call_stop(s, &handle, grace_seconds)
                            .await
                    })
                },
            )
            .await?;
        result.map_err(self.refused(Call::Stop))
    }

    pub async fn destroy(&self, run: &str, handle: &str) -> Result<(), CallError> {
        let handle = handle.to_string();
        let result = self
            .call(Call::Destroy, Some(run.into()), discard(), move |p, s| {
                Box::pin(async move { p.host_infra_driver().call_destroy(s, &handle).await })
            })
            .await?;
        result.map_err(self.refused(Call::Destroy))
    }

    pub async fn recover(&self, run: &str, handle: &str) -> Result<RunStatus, CallError> {
        let handle = handle.to_string();
        let result = self
            .call(Call::Recover, Some(run.into()), discard(), move |p, s| {
                Box::pin(async move { p.host_infra_driver().call_recover(s, &handle).await })
            })
            .await?;
        result
            .map(bounded_status)
            .map_err(self.refused(Call::Recover))
    }

    /// What the capabilities created for `run` that still runs: after a
    /// `stop`, this should be nothing.
    pub async fn still_running(&self, run: &str) -> Vec<String> {
        let tables = self.runtime.tables();
        let mut running = Vec::new();
        for capability in self.grants.iter() {
            running.extend(capability.running(tables, run).await);
        }
        running
    }

    /// What `run`'s calls have sent over `http` so far, in order, when the
    /// runtime records it (`RuntimeConfig::record_http`); empty otherwise.
    pub fn sent_requests(&self, run: &str) -> Vec<crate::capabilities::SentRequest> {
        self.runtime
            .tables()
            .http
            .as_ref()
            .map(|journal| journal.sent(run))
            .unwrap_or_default()
    }

    /// Kills what of `run` still runs, when the plugin's `stop` did not; says
    /// what that was.
    pub async fn kill_leftovers(&self, run: &str) -> Vec<String> {
        let tables = self.runtime.tables();
        let mut killed = Vec::new();
        for capability in self.grants.iter() {
            killed.extend(capability.kill(tables, run).await);
        }
        killed
    }

    /// Ends the host's part in `run`, after its `destroy`: kills and removes
    /// whatever the plugin left, and says what that was (nothing, when the
    /// plugin kept its promises).
    pub async fn release(&self, run: &str) -> Vec<String> {
        let tables = self.runtime.tables();
        let mut left = Vec::new();
        for capability in self.grants.iter() {
            left.extend(capability.release(tables, run).await);
        }
        left
    }

    /// The flow runs with something in this worker's directory (processes,
    /// from before a restart too), for reconciling them with the server.
    pub fn runs_with_processes(&self) -> Vec<String> {
        let tables = self.runtime.tables();
        self.grants
            .iter()
            .flat_map(|capability| capability.runs_on_disk(tables))
            .collect()
    }

    async fn call<R>(
        &self,
        call: Call,
        scope: Option<String>,
        sink: Arc<dyn OutputSink>,
        f: impl for<'a> FnOnce(&'a Plugin, &'a mut Store<PluginState>) -> CallFuture<'a, R>,
    ) -> Result<R, CallError> {
        let config = self.runtime.config();
        let deadline = match call {
            Call::Describe | Call::Validate | Call::Inspect | Call::Recover => config.quick_call,
            Call::Start | Call::Stop | Call::Destroy => config.slow_call,
            Call::Wait => Duration::MAX,
        };
        self.call_within(call, deadline, scope, sink, f).await
    }

    /// The plugin's error value as a [`CallError`], counted (`call_within`
    /// counts only the failures it sees itself).
    fn refused(&self, call: Call) -> impl Fn(PluginError) -> CallError + '_ {
        move |error| {
            let error = plugin_error(error);
            let metrics = self.runtime.call_metrics();
            metrics.failed(&self.info.name, call.name(), error.kind());
            error
        }
    }

    /// A fresh store and instance, one call bounded by `deadline` (wall
    /// clock), and the failure classified.
    async fn call_within<R>(
        &self,
        call: Call,
        deadline: Duration,
        scope: Option<String>,
        sink: Arc<dyn OutputSink>,
        f: impl for<'a> FnOnce(&'a Plugin, &'a mut Store<PluginState>) -> CallFuture<'a, R>,
    ) -> Result<R, CallError> {
        let started = std::time::Instant::now();
        // Whatever the plugin or a capability logs during the call carries
        // the run it is for; a capability's own span (`module`, `function`,
        // at TRACE) nests inside this one.
        let span = tracing::info_span!(
            "plugin_call",
            plugin = %self.info.name,
            call = call.name(),
            flow_run_id = scope.as_deref(),
        );
        let work = self.call_unbounded(scope, sink, f).instrument(span);
        let result = if deadline == Duration::MAX {
            work.await
        } else {
            // The epoch callback yields at every tick, so even a guest that
            // never calls the host gives the timer its turn; dropping the
            // future drops the store and its instance.
            match tokio::time::timeout(deadline, work).await {
                Ok(result) => result,
                Err(_) => Err(CallError::Deadline {
                    plugin: self.info.name.clone(),
                    call: call.name(),
                    seconds: deadline.as_secs_f64().ceil() as u64,
                }),
            }
        };
        let metrics = self.runtime.call_metrics();
        metrics.observe(&self.info.name, call.name(), started.elapsed());
        if let Err(error) = &result {
            metrics.failed(&self.info.name, call.name(), error.kind());
        }
        result
    }

    async fn call_unbounded<R>(
        &self,
        scope: Option<String>,
        sink: Arc<dyn OutputSink>,
        f: impl for<'a> FnOnce(&'a Plugin, &'a mut Store<PluginState>) -> CallFuture<'a, R>,
    ) -> Result<R, CallError> {
        let config = self.runtime.config();
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .envs(self.grants.env())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = PluginState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(config.memory_limit_bytes),
            stderr,
            scopes: Scopes::new(
                self.runtime.tables(),
                &CallScope {
                    plugin: &self.info.name,
                    run: scope.as_deref(),
                    sink: &sink,
                    grants: &self.grants,
                },
            ),
            host_calls: 0,
            seen_host_calls: 0,
            spinning_ticks: 0,
            cpu_exceeded: false,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.memory);
        let budget_ticks =
            (config.cpu_budget.as_millis() / super::EPOCH_TICK.as_millis()).max(1) as u64;
        // The deadline is checked only while guest code runs. Each expiry asks:
        // has the guest called the host since the last tick? If not for
        // `budget_ticks` ticks in a row, it is spinning: stop it. Either way,
        // yield so a busy guest shares its tokio thread.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut context| {
            let state = context.data_mut();
            if state.host_calls != state.seen_host_calls {
                state.seen_host_calls = state.host_calls;
                state.spinning_ticks = 0;
            }
            state.spinning_ticks += 1;
            if state.spinning_ticks > budget_ticks {
                state.cpu_exceeded = true;
                return Err(wasmtime::Error::msg("plugin exceeded its CPU budget"));
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        let instance = match self.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) => return Err(self.classify(&store, e)),
        };
        match f(&instance, &mut store).await {
            Ok(value) => Ok(value),
            Err(e) => Err(self.classify(&store, e)),
        }
    }

    fn classify(&self, store: &Store<PluginState>, error: wasmtime::Error) -> CallError {
        let plugin = self.info.name.clone();
        let state = store.data();
        if let Some(requested) = state.memory.refused {
            return CallError::Memory {
                plugin,
                limit_mib: state.memory.cap_bytes() >> 20,
                requested_mib: requested >> 20,
            };
        }
        match error.downcast_ref::<Trap>() {
            _ if state.cpu_exceeded => CallError::CpuBudget {
                plugin,
                seconds: self.runtime.config().cpu_budget.as_secs_f64(),
            },
            Some(trap) => {
                let said = String::from_utf8_lossy(&state.stderr.contents())
                    .trim()
                    .to_string();
                // A Rust guest's panic prints "panicked at ..", its message, then a
                // "note:" about backtraces; the message is the useful line.
                let last = said
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty() && !l.starts_with("note:"));
                let message = match last {
                    Some(last) => format!("{trap} (plugin said: {last})"),
                    None => trap.to_string(),
                };
                CallError::Trap { plugin, message }
            }
            None => CallError::Trap {
                plugin,
                message: format!("{error:#}"),
            },
        }
    }
}

fn discard() -> Arc<dyn OutputSink> {
    capabilities::discard_output()
}

/// WASI with nothing open, and each granted capability.
fn linker_for(runtime: &Runtime, grants: &Grants) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker: Linker<PluginState> = Linker::new(runtime.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    for capability in grants.iter() {
        capability.link(&mut linker)?;
    }
    Ok(linker)
}
