//! Host interfaces that plugins import, one file each. A plugin reaches the
//! outside world only through these, and only through those it was granted.

mod container_runtime;
mod log;
mod process;

pub use container_runtime::{ContainerHost, ContainerTable};
pub use log::{CollectOutput, DiscardOutput, LogHost, OutputSink, discard_output};
pub use process::{ProcessHost, ProcessTable};
