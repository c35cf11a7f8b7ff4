//! `host`: a WebAssembly-plugin worker platform.
//!
//! # Layout
//! - [`runtime`]: the wasmtime engine, component cache, grants and per-call
//!   limits; [`runtime::LoadedPlugin`] is the typed plugin contract.
//! - [`capabilities`]: host interfaces plugins import (`log`, `process`).
//! - [`plugins`]: the registry of built-in and plugin-directory plugins.
//! - [`conformance`]: the checks behind `host plugin test`.
//! - [`template`]: `{{ placeholder }}` rendering of base job templates.
//! - [`cli`]: one file per command group; `main.rs` only calls [`cli::run`].

pub mod capabilities;
pub mod cli;
pub mod client;
pub mod conformance;
pub mod control;
pub mod error;
pub mod model;
pub mod orchestration;
pub mod plugins;
pub mod runtime;
pub mod server;
pub mod store;
pub mod template;
pub mod worker;
