//! `host`: a WebAssembly-plugin worker platform.
//!
//! # Layout
//! - [`contract`]: the host-side bindings of the WIT world, below both
//!   [`runtime`] and [`capabilities`].
//! - [`runtime`]: the wasmtime engine, component cache, grants and per-call
//!   limits; [`runtime::LoadedPlugin`] is the typed plugin contract.
//! - [`capabilities`]: host interfaces plugins import (`log`, `process`).
//! - [`plugins`]: the registry of built-in and plugin-directory plugins.
//! - [`conformance`]: the checks behind `host plugin test`.
//! - [`scaffold`]: the plugin crate `host plugin new` writes.
//! - [`lines`]: output cut into bounded lines while it is read.
//! - [`events`]: the feed of committed changes behind `/api/events`.
//! - [`server`]: the HTTP API and, in `server::ui`, the web UI at `/`.
//! - [`metrics`]: Prometheus metrics of the server, the worker and plugin calls.
//! - [`template`]: `{{ placeholder }}` rendering of base job templates.
//! - [`supervisor`]: `host __supervise`, which holds one process run and
//!   outlives its worker.
//! - [`secret`]: random keys and HMAC, for records others must trust.
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
pub mod worker;
