//! The `host` command line: one file per command group. Errors reach the edge as
//! `anyhow` and leave as one line on stderr with a non-zero exit.

mod deploy;
mod deployment;
mod flow_run;
mod output;
mod plugin;
mod serve;
mod token;
mod work_pool;
mod work_queue;
mod worker;

use crate::runtime::{Runtime, RuntimeConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "host",
    version,
    about = "Run flows on your own infrastructure through WebAssembly plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    api: ApiArgs,
    /// How log lines are written to stderr: `text` (coloured only on a
    /// terminal) or `json`, one object per line.
    #[arg(
        long,
        global = true,
        env = "HOST_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the server is, for every command that talks to it.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// The server's URL, or several replicas' separated by commas (a request
    /// that cannot reach one goes to the next).
    #[arg(long, global = true, env = "HOST_API_URL", default_value = crate::client::DEFAULT_API_URL)]
    pub api_url: String,
    /// The API token, when the server requires one. Prefer
    /// --api-token-file: a token given here shows in `ps`, and one in the
    /// environment in `/proc/PID/environ` to every process of the same user.
    #[arg(long, global = true, env = "HOST_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A file whose first line is the API token.
    #[arg(
        long,
        global = true,
        env = "HOST_API_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "api_token"
    )]
    pub api_token_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted for `https://` servers, on top
    /// of the system's (a private CA).
    #[arg(long, global = true, env = "HOST_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) shown to servers or proxies that ask for
    /// one (mTLS); needs --client-key.
    #[arg(long, global = true, env = "HOST_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, global = true, env = "HOST_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// Seconds one request may take before the server counts as unreachable
    /// (a read then goes to the next URL; long-polls add their wait).
    #[arg(long, global = true, env = "HOST_API_TIMEOUT", default_value_t = crate::client::DEFAULT_DEADLINE.as_secs())]
    pub api_timeout_seconds: u64,
}

impl ApiArgs {
    /// The token, from --api-token-file or --api-token / HOST_API_TOKEN.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.api_token_file else {
            return Ok(self.api_token.clone().filter(|t| !t.is_empty()));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--api-token-file {}: {e}", path.display()))?;
        match text.lines().next().map(str::trim) {
            Some(token) if !token.is_empty() => Ok(Some(token.to_string())),
            _ => anyhow::bail!(
                "--api-token-file {}: the first line is empty; it should hold the token",
                path.display()
            ),
        }
    }

    /// What clients trust and show over TLS (--ca-file, --client-cert).
    pub fn client_tls(&self) -> anyhow::Result<crate::tls::ClientTls> {
        Ok(crate::tls::ClientTls::load(
            self.ca_file.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
        )?)
    }

    pub fn client(&self) -> anyhow::Result<crate::client::Client> {
        let client =
            crate::client::Client::with_tls(&self.api_url, self.token()?, &self.client_tls()?);
        Ok(client.with_deadline(std::time::Duration::from_secs(
            self.api_timeout_seconds.max(1),
        )))
    }
}

/// Options of the plugin runtime, on the commands that load plugins (and only
/// those, so `--help` elsewhere does not offer them).
#[derive(clap::Args, Clone)]
pub struct RuntimeArgs {
    /// Directory of extra plugins (`*.wasm`, grants in `grants.toml`).
    #[arg(long, env = "HOST_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Where compiled plugins are cached.
    #[arg(long, env = "HOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Memory a plugin instance may use, in MiB.
    #[arg(long, env = "HOST_PLUGIN_MEMORY_MIB", default_value_t = 256)]
    pub plugin_memory_mib: usize,
    /// Seconds a plugin may compute without calling the host before it is
    /// interrupted (time blocked in host calls does not count).
    #[arg(long, env = "HOST_PLUGIN_CPU_SECONDS", default_value_t = 10.0)]
    pub plugin_cpu_seconds: f64,
    /// Deadline of the plugin calls that must not block (describe, validate,
    /// inspect, recover), in seconds.
    #[arg(long, env = "HOST_PLUGIN_QUICK_CALL_SECONDS", default_value_t = 5)]
    pub plugin_quick_call_seconds: u64,
    /// Deadline of `start` and `destroy` (and of `stop`, on top of its grace), in seconds.
    #[arg(long, env = "HOST_PLUGIN_SLOW_CALL_SECONDS", default_value_t = 60)]
    pub plugin_slow_call_seconds: u64,
}

impl RuntimeArgs {
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        self.runtime_in(None)
    }

    /// A runtime whose process runs live under `work_dir`.
    pub fn runtime_in(&self, work_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        Runtime::new(self.config_in(work_dir)?)
    }

    /// What [`RuntimeArgs::runtime_in`] makes its runtime from.
    pub fn config_in(&self, work_dir: Option<PathBuf>) -> anyhow::Result<RuntimeConfig> {
        if self.plugin_quick_call_seconds == 0 || self.plugin_slow_call_seconds == 0 {
            anyhow::bail!(
                "--plugin-quick-call-seconds and --plugin-slow-call-seconds: must be at least 1"
            );
        }
        Ok(RuntimeConfig {
            quick_call: std::time::Duration::from_secs(self.plugin_quick_call_seconds),
            slow_call: std::time::Duration::from_secs(self.plugin_slow_call_seconds),
            work_dir,
            memory_limit_bytes: self.plugin_memory_mib << 20,
            cpu_budget: std::time::Duration::try_from_secs_f64(self.plugin_cpu_seconds).map_err(
                |_| anyhow::anyhow!("--plugin-cpu-seconds: must be a positive number of seconds"),
            )?,
            cache_dir: self
                .cache_dir
                .clone()
                .or_else(crate::runtime::ComponentCache::default_dir),
            ..RuntimeConfig::default()
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (control plane).
    Serve(serve::ServeArgs),
    /// Create and manage work pools.
    #[command(subcommand)]
    WorkPool(work_pool::WorkPoolCommand),
    /// Create and manage a pool's work queues.
    #[command(subcommand)]
    WorkQueue(work_queue::WorkQueueCommand),
    /// Create or update the deployments of a project file (host.yaml), building its image.
    Deploy(deploy::DeployArgs),
    /// Create, inspect and run deployments.
    #[command(subcommand)]
    Deployment(deployment::DeploymentCommand),
    /// List, inspect, follow and cancel flow runs.
    #[command(subcommand)]
    FlowRun(flow_run::FlowRunCommand),
    /// Workers of a pool.
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// List, inspect and test infrastructure plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Make, list and revoke named API tokens (an admin's token is needed).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Holds one process run (started by the `process` capability).
    #[command(name = crate::supervisor::SUBCOMMAND, hide = true)]
    Supervise { dir: PathBuf },
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
    if let Command::Supervise { dir } = &cli.command {
        // No async runtime and no logging: it only copies bytes and waits.
        return crate::supervisor::main(dir);
    }
    init_tracing(cli.log_format);
    if !matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        // A command whose output pipe closed (`| head`) ends quietly, as Unix
        // tools do, instead of panicking on the write. Servers keep ignoring
        // SIGPIPE: a closed connection is an error for one request.
        restore_default_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args, &cli.api).await,
            Command::WorkPool(command) => work_pool::run(command, &cli.api).await,
            Command::WorkQueue(command) => work_queue::run(command, &cli.api).await,
            Command::Deploy(args) => deploy::run(args, &cli.api).await,
            Command::Deployment(command) => deployment::run(command, &cli.api).await,
            Command::FlowRun(command) => flow_run::run(command, &cli.api).await,
            Command::Worker(command) => worker::run(command, &cli.api).await,
            Command::Plugin(command) => plugin::run(command).await,
            Command::Token(command) => token::run(command, &cli.api).await,
            Command::Supervise { .. } => Ok(ExitCode::FAILURE),
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

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    // Workers log one line per run transition by default; the rest stays quiet.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,host::worker=info,host::cli::serve=info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; nothing else in this
    // process has set one for SIGPIPE (std only ignores it).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Raises the soft limit on open files to the hard one (often 1,024 soft
/// against 512K hard): a server holds a descriptor per connection and event
/// stream, a worker per run's files and sockets. Answers the soft limit now.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    // Raising the soft limit up to the hard one needs no privilege.
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if soft < hard && setrlimit(Resource::Nofile, raised).is_ok() {
        return hard;
    }
    soft
}
