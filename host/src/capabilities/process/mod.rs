//! `host:infra/process`: local processes, for the built-in `process` plugin
//! and any plugin `grants.toml` grants it to.
//!
//! Every call is for one flow run (its scope) and sees only the processes and
//! directories spawned for that run; [`ProcessTable`] holds them all, on disk
//! so that a restarted worker finds them again.

mod table;

pub use table::{OutputLimits, ProcessTable};

use super::{CallScope, HostCapability, Setup};
use crate::contract::ExitStatus;
use crate::contract::host::infra::process::{self, Host, OutputBatch, SpawnRequest, Spawned};
use crate::runtime::PluginState;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

pub(crate) struct Process;

impl HostCapability for Process {
    const INTERFACE: &'static str = "process";
    type Shared = Arc<ProcessTable>;
    type Scoped = ProcessHost;

    fn init(setup: &Setup<'_>) -> anyhow::Result<Arc<ProcessTable>> {
        let config = setup.config;
        let supervisor = match &config.supervisor {
            Some(program) => program.clone(),
            None => std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find this program's path: {e}"))?,
        };
        let processes = ProcessTable::new(
            setup.work_dir.to_path_buf(),
            supervisor,
            config.output_limits,
            config.run_as.clone(),
        );
        if config.run_as.is_some() {
            // Known at start rather than at the first run's spawn.
            processes.prepare().map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(Arc::new(processes))
    }

    fn link(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
        process::add_to_linker::<_, HasSelf<ProcessHost>>(linker, |s| &mut s.scopes().process)
    }

    fn scope(table: &Arc<ProcessTable>, call: &CallScope<'_>) -> ProcessHost {
        ProcessHost::new(table.clone(), call.run.map(String::from))
    }

    async fn running(table: &Arc<ProcessTable>, run: &str) -> Vec<String> {
        table.running(run)
    }

    async fn kill(table: &Arc<ProcessTable>, run: &str) -> Vec<String> {
        table.kill(run).await
    }

    async fn release(table: &Arc<ProcessTable>, run: &str) -> Vec<String> {
        table.release(run).await
    }

    fn runs_on_disk(table: &Arc<ProcessTable>) -> Vec<String> {
        table.scopes_on_disk()
    }
}

/// Per-call view of the table: the generated bindings want a `&mut` host,
/// and each call knows the flow run it is for.
pub struct ProcessHost {
    table: Arc<ProcessTable>,
    scope: Option<String>,
}

impl ProcessHost {
    pub fn new(table: Arc<ProcessTable>, scope: Option<String>) -> Self {
        ProcessHost { table, scope }
    }

    fn scope(&self) -> Result<&str, String> {
        self.scope.as_deref().ok_or_else(|| {
            "the process capability serves only calls for a flow run (not describe or validate)"
                .to_string()
        })
    }
}

impl Host for ProcessHost {
    async fn spawn(&mut self, request: SpawnRequest) -> Result<Spawned, String> {
        self.table.spawn(self.scope()?, request).await
    }
    async fn read_output(&mut self, id: u64, max_wait_ms: u32) -> Result<OutputBatch, String> {
        self.table.read_output(self.scope()?, id, max_wait_ms).await
    }
    async fn wait(&mut self, id: u64) -> Result<ExitStatus, String> {
        self.table.wait(self.scope()?, id).await
    }
    async fn try_wait(&mut self, id: u64) -> Result<Option<ExitStatus>, String> {
        self.table.try_wait(self.scope()?, id)
    }
    async fn signal(&mut self, id: u64, signal: i32) -> Result<(), String> {
        self.table.signal(self.scope()?, id, signal)
    }
    async fn remove_dir(&mut self, path: String) -> Result<(), String> {
        self.table.remove_dir(self.scope()?, &path)
    }
}
