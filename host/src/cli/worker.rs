//! `host worker ...`.

use super::output::{enum_text, print_json, print_table};
use super::{ApiArgs, OutputFormat, RuntimeArgs};
use crate::control::WorkerView;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum WorkerCommand {
    /// List a pool's workers and whether they are online.
    Ls {
        #[arg(long)]
        pool: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

pub async fn run(
    command: WorkerCommand,
    api: &ApiArgs,
    _runtime: &RuntimeArgs,
) -> anyhow::Result<ExitCode> {
    let client = api.client();
    match command {
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
