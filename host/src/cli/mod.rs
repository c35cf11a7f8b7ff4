//! The `host` command line: one file per command group. Errors reach the edge as
//! `anyhow` and leave as one line on stderr with a non-zero exit.

mod output;
mod plugin;

use crate::runtime::{Runtime, RuntimeConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "host", version, about = "Run flows on your own infrastructure through WebAssembly plugins")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Options of the plugin runtime, shared by every command that loads plugins.
#[derive(clap::Args, Clone)]
pub struct RuntimeArgs {
    /// Directory of extra plugins (`*.wasm`, grants in `grants.toml`).
    #[arg(long, global = true, env = "HOST_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Where compiled plugins are cached.
    #[arg(long, global = true, env = "HOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Memory a plugin instance may use, in MiB.
    #[arg(long, global = true, env = "HOST_PLUGIN_MEMORY_MIB", default_value_t = 256)]
    pub plugin_memory_mib: usize,
    /// Wasm instructions one plugin call may execute (time blocked in host calls is free).
    #[arg(long, global = true, env = "HOST_PLUGIN_CPU_BUDGET", default_value_t = 10_000_000_000)]
    pub plugin_cpu_budget: u64,
}

impl RuntimeArgs {
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        Runtime::new(RuntimeConfig {
            memory_limit_bytes: self.plugin_memory_mib << 20,
            cpu_budget: self.plugin_cpu_budget,
            cache_dir: self.cache_dir.clone().or_else(crate::runtime::ComponentCache::default_dir),
            ..RuntimeConfig::default()
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// List, inspect and test infrastructure plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// `--output json` for scripts, tables for people.
#[derive(clap::ValueEnum, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Plugin(command) => plugin::run(command, &cli.runtime).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
