//! What a call into a plugin can end with, and the bounds on what a plugin
//! may hand back: a value past them is cut or refused here, at the boundary.

use super::{ErrorKind, ExitStatus, PluginError, RunStatus};
use crate::capabilities;

/// Why one call into a plugin failed. The host goes on after any of these.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin returned an error value: the contract working as meant.
    #[error("{message}")]
    Plugin { kind: ErrorKind, message: String },
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error(
        "plugin `{plugin}` computed for {seconds}s without calling the host and was stopped (its CPU budget)"
    )]
    CpuBudget { plugin: String, seconds: f64 },
    #[error(
        "plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB (it asked for {requested_mib} MiB)"
    )]
    Memory {
        plugin: String,
        limit_mib: usize,
        requested_mib: usize,
    },
    #[error("plugin `{plugin}` could not be instantiated: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin `{plugin}` did not answer `{call}` within {seconds}s and was stopped")]
    Deadline {
        plugin: String,
        call: &'static str,
        seconds: u64,
    },
    /// The plugin answered with a value the contract does not allow.
    #[error("plugin `{plugin}` broke the contract in `{call}`: {message}")]
    Contract {
        plugin: String,
        call: &'static str,
        message: String,
    },
}

impl CallError {
    /// A short name of how the call failed, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Plugin { .. } => "error",
            CallError::Trap { .. } => "trap",
            CallError::CpuBudget { .. } => "cpu_budget",
            CallError::Memory { .. } => "memory",
            CallError::Instantiate { .. } => "instantiate",
            CallError::Deadline { .. } => "deadline",
            CallError::Contract { .. } => "contract",
        }
    }
}

/// The calls of the contract, for deadlines and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Describe,
    Validate,
    Start,
    Wait,
    Inspect,
    Stop,
    Destroy,
    Recover,
}

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::Describe => "describe",
            Call::Validate => "validate",
            Call::Start => "start",
            Call::Wait => "wait",
            Call::Inspect => "inspect",
            Call::Stop => "stop",
            Call::Destroy => "destroy",
            Call::Recover => "recover",
        }
    }
}

/// A handle is stored on the flow run and sent with every later call.
pub const MAX_HANDLE_BYTES: usize = 16 << 10;
/// Error and exit messages are one line for people.
pub const MAX_MESSAGE_BYTES: usize = 2 << 10;

impl CallError {
    /// Worth trying the same call again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Plugin {
                kind: ErrorKind::Retryable,
                ..
            }
        )
    }
}

pub(super) fn plugin_error(error: PluginError) -> CallError {
    CallError::Plugin {
        kind: error.kind,
        message: capabilities::truncate(error.message, MAX_MESSAGE_BYTES),
    }
}

pub(super) fn bounded_exit(mut exit: ExitStatus) -> ExitStatus {
    exit.message = capabilities::truncate(exit.message, MAX_MESSAGE_BYTES);
    exit
}

pub(super) fn bounded_status(status: RunStatus) -> RunStatus {
    match status {
        RunStatus::Exited(exit) => RunStatus::Exited(bounded_exit(exit)),
        RunStatus::NotFound(why) => {
            RunStatus::NotFound(capabilities::truncate(why, MAX_MESSAGE_BYTES))
        }
        other => other,
    }
}
