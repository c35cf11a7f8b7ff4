//! `host`: a WebAssembly-plugin worker platform.
//!
//! # Layout
//! Plugin plane:
//! - [`contract`]: the host-side bindings of the WIT world, below both
//!   [`runtime`] and [`capabilities`].
//! - [`runtime`]: the wasmtime engine, component cache, grants and per-call
//!   limits; [`runtime::LoadedPlugin`] is the typed plugin contract.
//! - [`capabilities`]: host interfaces plugins import (`log`, `process`,
//!   `container-runtime`), and the build context of `host deploy`.
//! - [`supervisor`]: `host __supervise`, which holds one process run and
//!   outlives its worker.
//! - [`lines`]: output cut into bounded lines while it is read.
//! - [`secret`]: random keys and HMAC, for records others must trust.
//! - [`plugins`]: the registry of built-in and plugin-directory plugins.
//! - [`conformance`]: the checks behind `host plugin test`.
//! - [`scaffold`]: the plugin crate `host plugin new` writes.
//!
//! Control plane:
//! - [`model`]: the records, as stored and as served; plain data.
//! - [`orchestration`]: the flow-run state machine, the only place that
//!   decides a state transition.
//! - [`error`]: [`error::ApiError`], the control plane's one error type.
//! - [`template`]: `{{ placeholder }}` rendering of base job templates and
//!   job-variable merging.
//! - [`store`]: everything the control plane keeps (redb or PostgreSQL);
//!   the only module that knows a database.
//! - [`events`]: the feed of committed changes behind `/api/events`.
//! - [`control`]: the control plane's operations, independent of HTTP,
//!   and its background upkeep.
//! - [`server`]: the HTTP API and, in `server::ui`, the web UI at `/`.
//! - [`metrics`]: Prometheus metrics of the server, the worker and plugin calls.
//!
//! Worker and edges:
//! - [`client`]: the HTTP client of the API, for the CLI and the worker.
//! - [`tls`]: certificates and keys for the API's server and clients.
//! - [`worker`]: `host worker start`: claims runs and drives each through
//!   its pool type's plugin.
//! - [`cli`]: one file per command group; `main.rs` only calls [`cli::run`].

pub mod capabilities;
pub mod cli;
pub mod client;
pub mod conformance;
pub mod contract;
pub mod control;
pub mod error;
pub mod events;
pub mod lines;
pub mod metrics;
pub mod model;
pub mod orchestration;
pub mod plugins;
pub mod runtime;
pub mod scaffold;
pub mod secret;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod template;
pub mod tls;
pub mod worker;
