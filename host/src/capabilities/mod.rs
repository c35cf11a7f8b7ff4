//! Host interfaces that plugins import, one file each. A plugin reaches the
//! outside world only through these, and only through those it was granted.

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
