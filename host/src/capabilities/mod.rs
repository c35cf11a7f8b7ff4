//! Host interfaces that plugins import, one file each. A plugin reaches the
//! outside world only through these, and only through those it was granted.
//!
//! Every call acts for one flow run and sees only what was made for that
//! run; `describe` and `validate` get no capability. A plugin is untrusted
//! code, so whose a process or a container is comes from the host's own
//! records, never from what the plugin says.

pub mod build_context;
mod container_runtime;
mod log;
mod process;

pub use container_runtime::{ContainerHost, ContainerPolicy, ContainerTable, SCOPE_LABEL};
pub use log::{
    CollectOutput, DiscardOutput, LogHost, MAX_LINE_BYTES, MessageBudgets, OutputSink,
    discard_output, truncate,
};
pub use process::{OutputLimits, ProcessHost, ProcessTable};
