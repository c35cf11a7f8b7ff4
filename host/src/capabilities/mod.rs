//! Host interfaces that plugins import, one file each. A plugin reaches the
//! outside world only through these, and only through those it was granted.
//!
//! Every call acts for one flow run and sees only what was made for that
//! run; `describe` and `validate` get no capability. A plugin is untrusted
//! code, so whose a process or a container is comes from the host's own
//! records, never from what the plugin says.
//!
//! Every capability has one shape, [`HostCapability`]: it names its WIT
//! interface, links itself into a plugin's linker, makes what it keeps for the
//! whole runtime, scopes itself to one call of one flow run, and lists, kills
//! and releases what a run left. The runtime, the load checks and the plugin
//! registry reach capabilities only through the list at the bottom of this
//! file, never by naming one.
//!
//! # Adding a capability
//! 1. Write the interface in `wit/` and import it in the `plugin` world.
//! 2. Write one file here with a unit type implementing [`HostCapability`]:
//!    `INTERFACE` is the WIT name, `link` adds the generated bindings (reaching
//!    its per-call state as `state.scopes().<field>`), `init` and `scope` make
//!    its runtime-wide and per-call state from the runtime's configuration
//!    and the plugin's grants; `running`, `kill` and `release` only if it
//!    makes things that outlive a call.
//! 3. Add one line to `capabilities!` below: `Variant(field) => file::Type,`.
//!
//! `grants.toml`, `host plugin test --grant`, the load checks (an import
//! nobody granted is refused, naming it) and the cleanup after a run then
//! cover it with no other change.

pub mod build_context;
#[macro_use]
mod registry;
mod container_runtime;
mod http;
mod log;
mod process;

pub use self::http::{
    Auth, AwsEndpoints, Endpoint, HOST_HELD_HEADERS, HttpGrantError, HttpPolicy, HttpScope,
    SentRequest,
};
pub use container_runtime::{ContainerHost, ContainerPolicy, ContainerTable, SCOPE_LABEL};
pub use log::{
    CollectOutput, DiscardOutput, LogHost, MAX_LINE_BYTES, MessageBudgets, OutputSink,
    discard_output, truncate,
};
pub use process::{OutputLimits, ProcessHost, ProcessTable};

use crate::runtime::{Grants, PluginState, RuntimeConfig};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Linker;

/// One host interface a plugin may import.
///
/// Static functions rather than methods: a capability is a type, not a value,
/// and its state lives in [`Tables`] (runtime-wide) and [`Scopes`] (one
/// call), as fields the linker's getters reach without a lookup that could
/// fail.
pub(crate) trait HostCapability {
    /// The WIT interface, as in `host:infra/<INTERFACE>@0.1.0`; also the name
    /// an operator grants.
    const INTERFACE: &'static str;
    /// For a standard interface rather than one of `host:infra`: its WIT
    /// package (`wasi:http`), every interface of which needs the grant.
    const STANDARD_PACKAGE: Option<&'static str> = None;
    /// What it keeps for the whole runtime (what runs, for which flow run).
    type Shared: Send + Sync;
    /// Its state for one call: the flow run it acts for, what the grant allows.
    type Scoped: Send;

    fn init(setup: &Setup<'_>) -> anyhow::Result<Self::Shared>;

    /// Adds the interface's functions; the runtime calls it only when granted.
    fn link(linker: &mut Linker<PluginState>) -> wasmtime::Result<()>;

    fn scope(shared: &Self::Shared, call: &CallScope<'_>) -> Self::Scoped;

    /// What it made for `run` that still runs.
    fn running(_shared: &Self::Shared, _run: &str) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }

    /// Kills what of `run` still runs; says what that was.
    fn kill(_shared: &Self::Shared, _run: &str) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }

    /// Ends its part in `run`: kills and removes whatever is left, says what.
    fn release(_shared: &Self::Shared, _run: &str) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }

    /// The flow runs it holds something for on disk, from before a restart too.
    fn runs_on_disk(_shared: &Self::Shared) -> Vec<String> {
        Vec::new()
    }
}

/// What a capability may build its runtime-wide state from.
pub(crate) struct Setup<'a> {
    pub config: &'a RuntimeConfig,
    /// This runtime's own directory (one per worker).
    pub work_dir: &'a Path,
}

/// The call a capability scopes itself to.
pub(crate) struct CallScope<'a> {
    pub plugin: &'a str,
    /// `None` for `describe` and `validate`, which no capability serves.
    pub run: Option<&'a str>,
    pub sink: &'a Arc<dyn OutputSink>,
    pub grants: &'a Grants,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Capability {
    pub fn parse(name: &str) -> Option<Capability> {
        Capability::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The capability an import of a standard package (`wasi:http/types@0.2.6`)
    /// needs, if it is one a grant gives.
    pub fn for_standard_import(import: &str) -> Option<Capability> {
        Capability::ALL.iter().copied().find(|c| {
            c.standard_package().is_some_and(|package| {
                import
                    .strip_prefix(package)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
        })
    }
}

// The one list of capabilities. Order is the order of `Capability`'s `Ord`,
// which is the order grants and imports are listed in.
capabilities! {
    Log(log) => log::Log,
    Process(process) => process::Process,
    ContainerRuntime(container_runtime) => container_runtime::ContainerRuntime,
    Http(http) => http::Http,
}

#[cfg(test)]
mod tests {
    use super::Capability;

    #[test]
    fn names_are_distinct_and_parse_back() {
        for capability in Capability::ALL {
            assert_eq!(Capability::parse(capability.name()), Some(*capability));
        }
        let mut names: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Capability::ALL.len());
        assert_eq!(Capability::parse("network"), None);
    }

    #[test]
    fn standard_imports_name_the_capability_they_need() {
        let http = Some(Capability::Http);
        assert_eq!(
            Capability::for_standard_import("wasi:http/outgoing-handler@0.2.6"),
            http
        );
        assert_eq!(
            Capability::for_standard_import("wasi:http/types@0.2.12"),
            http
        );
        assert_eq!(
            Capability::for_standard_import("wasi:httpx/types@0.2.0"),
            None
        );
        assert_eq!(
            Capability::for_standard_import("wasi:io/streams@0.2.6"),
            None
        );
    }
}
