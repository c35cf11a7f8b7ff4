//! The end-to-end tests: one binary, a module per area, so the suite links
//! once (wasmtime's `tests/all`). Each module states what it proves in its
//! own `//!`.
//!
//! `cargo test --release --test all -- ui::` runs one area.

#[macro_use]
mod common;

mod boundaries;
mod containment;
mod control_api;
mod control_cli;
mod docker_containment;
mod docker_e2e;
mod ecs;
mod events;
mod faults;
mod fresh_setup;
mod http_capability;
mod http_grants;
mod no_run_lost;
mod plugin_cli;
mod plugin_runtime;
mod replicas;
mod run_actions;
mod run_find;
mod schedules;
mod tls;
mod tokens;
mod ui;
mod ui_actions;
mod ui_deploy;
mod ui_find;
mod whole_runs;
mod worker_e2e;
