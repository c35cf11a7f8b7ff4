//! The plugin author's crate for `host` infrastructure plugins.
//!
//! Implement [`Plugin`] for a unit struct, call [`export_plugin!`] on it, build the
//! crate as a `cdylib` for `wasm32-wasip2`, and the result is a component that
//! `host` can load. See `docs/PLUGINS.md` for the walk-through.
//!
//! # Layout
//! - [`Plugin`]: the one trait; typed configuration and handles through serde.
//! - [`Error`]: what a call may fail with; retryable or fatal.
//! - [`template`]: builds the default base job template and its JSON Schema,
//!   and splits a `command` variable given as one line.
//! - [`log`], [`capabilities`]: the host interfaces a plugin may call.
//! - [`http`]: a small client over the standard `wasi:http` (JSON, retries),
//!   for plugins granted `http`.
//! - [`local`]: the plumbing of a plugin that runs local processes.
//! - [`wrap`]: the same through a wrapper (a sandbox such as bwrap), with the
//!   wrapper's environment apart from the workload's.
//! - `glue` (hidden): turns the trait into the WIT exports; used by the macro.

pub mod http;
pub mod local;
pub mod template;
pub mod wrap;

#[doc(hidden)]
pub mod glue;

/// Generated bindings for the `host:infra` world. Plugin code should rarely need
/// them directly; the trait and the helpers cover the contract.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::host_plugin_sdk::bindings",
        generate_all,
    });
}

pub use serde;
pub use serde_json;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The WIT contract version this SDK speaks. `host` refuses plugins built for
/// another major (or, before 1.0, minor) version.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// What a call can fail with. `Retryable` tells the worker to try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Fatal(String),
    #[error("{0}")]
    Retryable(String),
}

impl Error {
    pub fn fatal(message: impl Into<String>) -> Self {
        Error::Fatal(message.into())
    }
    pub fn retryable(message: impl Into<String>) -> Self {
        Error::Retryable(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the infrastructure ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub message: String,
}

impl Exit {
    /// An exit with a code, explained in the usual words.
    pub fn code(code: i32) -> Self {
        Exit {
            code: Some(code),
            message: format!("exited with code {code}"),
            ..Exit::default()
        }
    }
    /// Killed by a signal.
    pub fn signal(signal: i32) -> Self {
        Exit {
            signal: Some(signal),
            message: format!("killed by signal {signal}"),
            ..Exit::default()
        }
    }
}

/// A non-blocking view of the infrastructure, for `inspect` and `recover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    Exited(Exit),
    NotFound(String),
}

/// Who the plugin is; returned from `describe`.
#[derive(Debug, Clone)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Built with [`template::Template`].
    pub default_base_job_template: serde_json::Value,
    /// Capability interfaces the plugin imports besides `log`, e.g. `["process"]`.
    pub capabilities: Vec<String>,
    /// Job variables that `host plugin test` renders through the default
    /// template and starts: the run should end quickly and successfully.
    pub example_variables: serde_json::Value,
}

/// One flow run to provision, with the configuration already parsed.
#[derive(Debug, Clone)]
pub struct Job<C> {
    pub flow_run_id: String,
    pub flow_run_name: String,
    pub config: C,
    pub env: Vec<(String, String)>,
    pub command: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// An infrastructure plugin. Every call runs in a fresh instance, so keep
/// nothing in statics: what later calls need goes into the `Handle`.
pub trait Plugin {
    /// The job configuration, parsed from the rendered JSON. Unknown fields are
    /// the author's choice (`#[serde(deny_unknown_fields)]` to refuse them).
    type Config: DeserializeOwned;
    /// What `start` returns and every later call receives. Stored as JSON by the
    /// worker; the SDK adds a version tag so old handles are refused cleanly.
    type Handle: Serialize + DeserializeOwned;

    fn info() -> Info;

    /// Extra checks beyond parsing. Parsing errors are reported by the SDK.
    fn validate(config: &Self::Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    fn start(job: Job<Self::Config>) -> Result<Self::Handle>;
    fn wait(handle: Self::Handle) -> Result<Exit>;
    fn inspect(handle: Self::Handle) -> Result<Status>;
    fn stop(handle: Self::Handle, grace_seconds: u32) -> Result<()>;
    fn destroy(handle: Self::Handle) -> Result<()>;

    /// Job variables for a run that lasts until it is stopped (a minute or
    /// more): `host plugin test` checks `stop` on it. `None` leaves `stop`
    /// unchecked.
    fn long_running_example() -> Option<serde_json::Value> {
        None
    }

    /// Re-attach after a worker restart. The default asks `inspect`.
    fn recover(handle: Self::Handle) -> Result<Status> {
        Self::inspect(handle)
    }
}

/// Messages about the plugin's own work, and the workload's output.
pub mod log {
    use crate::bindings::host::infra::log::{self as wit, Level};
    pub use crate::bindings::host::infra::types::OutputStream;

    pub fn debug(text: &str) {
        wit::message(Level::Debug, text);
    }
    pub fn info(text: &str) {
        wit::message(Level::Info, text);
    }
    pub fn warn(text: &str) {
        wit::message(Level::Warn, text);
    }
    pub fn error(text: &str) {
        wit::message(Level::Error, text);
    }
    /// One line of the workload's output, for the flow run's logs.
    pub fn output(stream: OutputStream, line: &str) {
        wit::output(stream, line);
    }
}

/// The host's capability interfaces. Importing one makes the plugin need a grant
/// for it; functions the plugin never calls are not imported.
pub mod capabilities {
    pub use crate::bindings::host::infra::container_runtime;
    pub use crate::bindings::host::infra::process;
}

/// Export a [`Plugin`] implementation as the component's `driver` interface.
///
/// ```ignore
/// struct MyPlugin;
/// impl host_plugin_sdk::Plugin for MyPlugin { /* ... */ }
/// host_plugin_sdk::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident) => {
        impl $crate::bindings::exports::host::infra::driver::Guest for $plugin {
            fn describe() -> $crate::bindings::host::infra::types::PluginInfo {
                $crate::glue::describe::<$plugin>()
            }
            fn validate(
                configuration: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::bindings::host::infra::types::PluginError> {
                $crate::glue::validate::<$plugin>(&configuration)
            }
            fn start(
                job: $crate::bindings::host::infra::types::Job,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::host::infra::types::PluginError,
            > {
                $crate::glue::start::<$plugin>(job)
            }
            fn wait(
                handle: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::bindings::host::infra::types::ExitStatus,
                $crate::bindings::host::infra::types::PluginError,
            > {
                $crate::glue::wait::<$plugin>(&handle)
            }
            fn inspect(
                handle: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::bindings::host::infra::types::RunStatus,
                $crate::bindings::host::infra::types::PluginError,
            > {
                $crate::glue::inspect::<$plugin>(&handle)
            }
            fn stop(
                handle: ::std::string::String,
                grace_seconds: u32,
            ) -> ::std::result::Result<(), $crate::bindings::host::infra::types::PluginError> {
                $crate::glue::stop::<$plugin>(&handle, grace_seconds)
            }
            fn destroy(
                handle: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::bindings::host::infra::types::PluginError> {
                $crate::glue::destroy::<$plugin>(&handle)
            }
            fn recover(
                handle: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::bindings::host::infra::types::RunStatus,
                $crate::bindings::host::infra::types::PluginError,
            > {
                $crate::glue::recover::<$plugin>(&handle)
            }
        }
        $crate::bindings::__export_plugin_world!($plugin with_types_in $crate::bindings);
    };
}
