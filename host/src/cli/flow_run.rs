//! `host flow-run ...`, and the follower behind `--watch` and `logs --follow`.

use super::output::{print_json, print_table, visible};
use super::{ApiArgs, OutputFormat};
use crate::client::Client;
use crate::model::{FlowRun, LogLine, State, StateType};
use crate::server::LogPage;
use crate::store::RunPage;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum FlowRunCommand {
    /// List flow runs, newest first.
    Ls {
        /// One state or several, comma-separated (FAILED,CRASHED; LATE too).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        pool: Option<String>,
        /// FLOW/NAME
        #[arg(long)]
        deployment: Option<String>,
        /// Runs whose name holds this (any case).
        #[arg(long)]
        name: Option<String>,
        /// Expected to start at or after this (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Expected to start at or before this (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// `expected` (expected start, newest first; the default) or `created`.
        #[arg(long)]
        sort: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The cursor printed by a previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show one flow run with its state history.
    Inspect {
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Print a run's logs; with --follow, until it ends.
    Logs {
        id: String,
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a run (SCHEDULED at once; PENDING/RUNNING through its worker).
    Cancel { id: String },
    /// Retry a FAILED, CRASHED or CANCELLED run: a new attempt, SCHEDULED now.
    Retry { id: String },
    /// Delete a SCHEDULED or finished run and its logs.
    Delete { id: String },
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The API's largest page; longer listings are fetched page by page.
const API_PAGE_LIMIT: usize = 1000;

/// Up to `limit` runs from `cursor` on, in as many API pages as that takes.
async fn list_runs(
    client: &Client,
    filters: &[(&str, Option<String>)],
    limit: usize,
    mut cursor: Option<String>,
) -> anyhow::Result<RunPage> {
    let mut runs = Vec::new();
    loop {
        let page_limit = (limit - runs.len()).min(API_PAGE_LIMIT);
        let mut query = format!("limit={page_limit}");
        for (key, value) in filters.iter().chain([&("cursor", cursor.clone())]) {
            if let Some(value) = value {
                query.push_str(&format!("&{key}={}", encode(value)));
            }
        }
        let page: RunPage = client.get(&format!("/api/flow-runs?{query}")).await?;
        let full = page.runs.len() == page_limit;
        runs.extend(page.runs);
        cursor = page.next_cursor.filter(|_| full);
        if cursor.is_none() || runs.len() == limit {
            return Ok(RunPage {
                runs,
                next_cursor: cursor,
                total: page.total,
            });
        }
    }
}

pub async fn run(command: FlowRunCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        FlowRunCommand::Ls {
            state,
            pool,
            deployment,
            name,
            since,
            until,
            sort,
            limit,
            cursor,
            output,
        } => {
            if limit == 0 {
                anyhow::bail!("--limit: must be at least 1");
            }
            let filters = [
                ("state", state),
                ("pool", pool),
                ("deployment", deployment),
                ("name", name),
                ("since", since),
                ("until", until),
                ("sort", sort),
            ];
            let page = list_runs(&client, &filters, limit, cursor).await?;
            if output == OutputFormat::Json {
                return print_json(&page).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = page
                .runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.name.clone(),
                        r.deployment.clone(),
                        format!("{} ({})", r.state.state_type, r.state.name),
                        r.scheduled_at.to_rfc3339(),
                    ]
                })
                .collect();
            print_table(&["ID", "NAME", "DEPLOYMENT", "STATE", "SCHEDULED"], &rows);
            if let Some(total) = page.total {
                println!("{total} run(s) match");
            }
            if let Some(cursor) = &page.next_cursor {
                println!("more: --cursor {}", encode(cursor));
            }
        }
        FlowRunCommand::Inspect { id, output } => {
            let run: FlowRun = client.get(&format!("/api/flow-runs/{id}")).await?;
            if output == OutputFormat::Json {
                return print_json(&run).map(|()| ExitCode::SUCCESS);
            }
            println!("id:         {}", run.id);
            println!("name:       {}", visible(&run.name));
            println!("deployment: {}", run.deployment);
            println!("pool/queue: {}/{}", run.pool, run.queue);
            println!(
                "state:      {} ({}){}",
                run.state.state_type,
                run.state.name,
                message(&run.state.message)
            );
            println!("scheduled:  {}", run.scheduled_at.to_rfc3339());
            if let Some(worker) = &run.worker {
                println!("worker:     {worker}");
            }
            if let Some(code) = run.exit_code {
                println!("exit code:  {code}");
            }
            println!("history:");
            for state in run.history.iter().chain(std::iter::once(&run.state)) {
                println!(
                    "  {}  {} ({}){}",
                    state.timestamp.to_rfc3339(),
                    state.state_type,
                    state.name,
                    message(&state.message)
                );
            }
        }
        FlowRunCommand::Logs { id, follow: true } => {
            follow(&client, &id, Show::Logs).await?;
        }
        FlowRunCommand::Logs { id, follow: false } => {
            Printed::default()
                .catch_up(&client, &id, Show::Logs)
                .await?;
        }
        FlowRunCommand::Cancel { id } => {
            let run: FlowRun = client
                .post(
                    &format!("/api/flow-runs/{id}/cancel"),
                    &serde_json::json!({}),
                )
                .await?;
            println!(
                "Flow run `{}` is {}",
                visible(&run.name),
                run.state.state_type
            );
        }
        FlowRunCommand::Retry { id } => {
            let run: FlowRun = client
                .post(
                    &format!("/api/flow-runs/{}/retry", encode(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            println!(
                "Flow run `{}` is {} again (attempt {})",
                visible(&run.name),
                run.state.state_type,
                crate::orchestration::attempts(&run) + 1
            );
        }
        FlowRunCommand::Delete { id } => {
            client
                .delete(&format!("/api/flow-runs/{}", encode(&id)))
                .await?;
            println!("Deleted flow run {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn message(text: &Option<String>) -> String {
    text.as_ref()
        .map(|m| format!(": {}", visible(m)))
        .unwrap_or_default()
}

async fn logs_after(client: &Client, id: &str, after: Option<u64>) -> anyhow::Result<LogPage> {
    let after = after.map(|seq| format!("&after={seq}")).unwrap_or_default();
    Ok(client
        .get(&format!("/api/flow-runs/{id}/logs?limit=1000{after}"))
        .await?)
}

/// Prints state changes and log lines until the run ends. Exit 0 only for COMPLETED.
pub async fn watch(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let run = follow(client, id, Show::StatesAndLogs).await?;
    Ok(if run.state.state_type == StateType::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Show {
    Logs,
    StatesAndLogs,
}

/// What has been printed, so a resync after a reconnect prints nothing twice.
#[derive(Default)]
struct Printed {
    states: usize,
    next_log: u64,
}

impl Printed {
    fn state(&mut self, index: usize, state: &State, show: Show) {
        if index < self.states {
            return;
        }
        if show == Show::StatesAndLogs {
            println!(
                "{} {} ({}){}",
                state.timestamp.format("%H:%M:%S%.3f"),
                state.state_type,
                state.name,
                message(&state.message)
            );
        }
        self.states = index + 1;
    }

    /// Every state since the last one printed, so quick ones are not skipped.
    fn run(&mut self, run: &FlowRun, show: Show) {
        for (index, state) in states_of(run).enumerate() {
            self.state(index, state, show);
        }
    }

    fn log(&mut self, line: &LogLine, show: Show) {
        if line.seq < self.next_log {
            return;
        }
        match show {
            Show::Logs => println!("{}", visible(&line.message)),
            Show::StatesAndLogs => println!("  | {}", visible(&line.message)),
        }
        self.next_log = line.seq + 1;
    }

    /// Everything stored that was not printed yet, states and lines in the
    /// order they happened.
    async fn catch_up(&mut self, client: &Client, id: &str, show: Show) -> anyhow::Result<FlowRun> {
        let run: FlowRun = client.get(&format!("/api/flow-runs/{id}")).await?;
        let mut lines: Vec<LogLine> = Vec::new();
        loop {
            let after = lines.last().map(|l| l.seq).or(self.next_log.checked_sub(1));
            let page = logs_after(client, id, after).await?;
            if page.lines.is_empty() {
                break;
            }
            lines.extend(page.lines);
        }
        let mut lines = lines.into_iter().peekable();
        for (index, state) in states_of(&run).enumerate() {
            if index >= self.states {
                while let Some(line) = lines.next_if(|l| l.timestamp < state.timestamp) {
                    self.log(&line, show);
                }
            }
            self.state(index, state, show);
        }
        for line in lines {
            self.log(&line, show);
        }
        Ok(run)
    }
}

fn states_of(run: &FlowRun) -> impl Iterator<Item = &State> {
    run.history.iter().chain(std::iter::once(&run.state))
}

/// Follows a run through the event stream until it ends; returns it as it ended.
async fn follow(client: &Client, id: &str, show: Show) -> anyhow::Result<FlowRun> {
    let mut printed = Printed::default();
    loop {
        // Subscribed before catching up, so nothing falls between the two.
        let mut stream = client.events(&format!("flow_run={id}"), None).await?;
        let mut run = printed.catch_up(client, id, show).await?;
        loop {
            if run.state.state_type.is_terminal() {
                // Lines shipped after the final state still belong to it.
                return printed.catch_up(client, id, show).await;
            }
            let Some(event) = stream.next().await? else {
                break; // The server went away: reconnect and resync.
            };
            match event.event.as_str() {
                "run" => {
                    let change: RunChange = serde_json::from_str(&event.data)?;
                    printed.run(&change.flow_run, show);
                    run = change.flow_run;
                }
                "log" => {
                    let change: LogChange = serde_json::from_str(&event.data)?;
                    printed.log(&change.line, show);
                }
                "run_deleted" => anyhow::bail!("flow run {id} was deleted"),
                "reset" => break,
                _ => {}
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct RunChange {
    flow_run: FlowRun,
}

#[derive(serde::Deserialize)]
struct LogChange {
    line: LogLine,
}
