//! `host worker ...`.

use super::output::{enum_text, print_json, print_table};
use super::{ApiArgs, OutputFormat, RuntimeArgs};
use crate::control::WorkerView;
use crate::worker::{LogLimits, WorkerConfig, default_name, default_work_dir, run_worker};
use clap::Subcommand;
use std::process::ExitCode;
use std::time::Duration;

// Parsed once per process: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum WorkerCommand {
    /// Start a worker that claims the pool's runs and provisions them.
    Start(StartArgs),
    /// List a pool's workers and whether they are online.
    Ls {
        #[arg(long)]
        pool: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

#[derive(clap::Args)]
pub struct StartArgs {
    #[arg(long)]
    pool: String,
    /// Only claim from these queues (repeatable); all of the pool's by default.
    #[arg(long = "work-queue", short = 'q')]
    work_queues: Vec<String>,
    /// Runs in flight at most.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Defaults to HOSTNAME-POOL, stable across restarts so runs are recovered.
    /// With a worker token, the token's name (the only one it may act as).
    #[arg(long)]
    name: Option<String>,
    /// Create the pool with this type if it does not exist.
    #[arg(long = "type")]
    pool_type: Option<String>,
    /// Claim once, run what was claimed, exit.
    #[arg(long)]
    run_once: bool,
    /// Serve GET /health (503 when the worker has not polled recently).
    #[arg(long)]
    with_healthcheck: bool,
    #[arg(long, default_value = "127.0.0.1:8080")]
    healthcheck_address: std::net::SocketAddr,
    #[arg(long, default_value_t = 10)]
    heartbeat_interval_seconds: u64,
    /// How long each claim long-poll waits for work.
    #[arg(long, default_value_t = 10)]
    poll_seconds: u64,
    /// On SIGINT/SIGTERM, how long in-flight runs may finish before the worker
    /// leaves them to recovery and exits.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_seconds: u64,
    /// Grace period `stop` gives a run on cancel or timeout.
    #[arg(long, default_value_t = 10)]
    stop_grace_seconds: u32,
    /// Output lines one run may keep; past it, one notice says how many were dropped.
    #[arg(long, default_value_t = LogLimits::default().max_lines)]
    max_log_lines_per_run: u64,
    /// Output bytes one run may keep.
    #[arg(long, default_value_t = LogLimits::default().max_bytes)]
    max_log_bytes_per_run: u64,
    /// This worker's directory for process runs (their supervisors' files and
    /// working directories); default: TMPDIR/host-runs-UID/POOL/NAME.
    #[arg(long, env = "HOST_WORK_DIR")]
    work_dir: Option<std::path::PathBuf>,
    /// Run process runs' workloads as this user (the worker must run as
    /// root): they cannot reach the worker, its records or other users'
    /// runs. Without it they run as the worker's own user.
    #[arg(long, value_name = "USER")]
    run_as: Option<String>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// The `--run-as` user, which only root can become.
fn run_as(user: &str) -> anyhow::Result<crate::supervisor::RunAs> {
    let user =
        crate::supervisor::RunAs::lookup(user).map_err(|e| anyhow::anyhow!("--run-as: {e}"))?;
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 && euid != user.uid {
        anyhow::bail!(
            "--run-as {}: only a worker running as root can run workloads as another user",
            user.user
        );
    }
    Ok(user)
}

/// The worker's name: `--name`, else HOSTNAME-POOL. A worker token acts
/// under its own name only, so with one the name is the token's: `--name`
/// may only repeat it, and `--pool` must be one of the token's pools (said
/// here, at start, rather than by the server's 403 at the first heartbeat).
async fn worker_name(
    client: &crate::client::Client,
    api: &ApiArgs,
    args: &StartArgs,
) -> anyhow::Result<String> {
    let token = api.token()?;
    // Only a named token can be a worker's; the others need no question.
    if token
        .as_deref()
        .and_then(crate::control::token_name)
        .is_some()
    {
        let me: crate::server::Whoami =
            crate::worker::while_unavailable("looking up the API token", || {
                client.get("/api/whoami")
            })
            .await?;
        if me.role == crate::model::Role::Worker {
            let own = me.token.unwrap_or_default();
            if let Some(name) = args.name.as_ref().filter(|name| **name != own) {
                anyhow::bail!(
                    "--name {name}: this is worker token `{own}`, which acts as worker `{own}` only; leave --name out"
                );
            }
            if !me.pools.contains(&args.pool) {
                anyhow::bail!(
                    "--pool {}: worker token `{own}` covers {} only",
                    args.pool,
                    me.pools.join(", ")
                );
            }
            return Ok(own);
        }
    }
    Ok(args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.pool)))
}

pub async fn run(command: WorkerCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        WorkerCommand::Start(args) => {
            if args.limit == 0 {
                anyhow::bail!("--limit: must be at least 1");
            }
            super::raise_open_file_limit();
            let name = worker_name(&client, api, &args).await?;
            let work_dir = args
                .work_dir
                .unwrap_or_else(|| default_work_dir(&args.pool, &name));
            let config = WorkerConfig {
                name,
                pool: args.pool,
                queues: (!args.work_queues.is_empty()).then_some(args.work_queues),
                limit: args.limit,
                pool_type: args.pool_type,
                run_once: args.run_once,
                heartbeat_interval: Duration::from_secs(args.heartbeat_interval_seconds.max(1)),
                poll_wait: Duration::from_secs(args.poll_seconds.clamp(1, 60)),
                shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
                stop_grace_seconds: args.stop_grace_seconds,
                healthcheck: args.with_healthcheck.then_some(args.healthcheck_address),
                plugin_dir: args.runtime.plugin_dir.clone(),
                api_url: api.api_url.clone(),
                log_limits: LogLimits {
                    max_lines: args.max_log_lines_per_run,
                    max_bytes: args.max_log_bytes_per_run,
                },
            };
            let mut runtime = args.runtime.config_in(Some(work_dir))?;
            runtime.run_as = args.run_as.as_deref().map(run_as).transpose()?;
            run_worker(
                client,
                crate::runtime::Runtime::new(runtime)?,
                config,
                super::serve::shutdown_signal(),
            )
            .await?;
        }
        WorkerCommand::Ls { pool, output } => {
            let workers: Vec<WorkerView> = client
                .get(&format!("/api/work-pools/{pool}/workers"))
                .await?;
            if output == OutputFormat::Json {
                return print_json(&workers).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = workers
                .iter()
                .map(|w| {
                    vec![
                        w.worker.name.clone(),
                        enum_text(&w.status),
                        w.worker.last_heartbeat.to_rfc3339(),
                        format!("{}s", w.worker.heartbeat_interval_seconds),
                    ]
                })
                .collect();
            print_table(&["NAME", "STATUS", "LAST HEARTBEAT", "INTERVAL"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
