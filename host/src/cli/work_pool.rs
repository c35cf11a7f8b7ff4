//! `host work-pool ...`.

use super::output::{enum_text, print_json, print_table};
use super::{ApiArgs, OutputFormat};
use crate::control::{PoolPatch, PoolSpec, PoolView};
use crate::model::FlowRun;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum WorkPoolCommand {
    /// Create a work pool of a plugin type.
    Create {
        name: String,
        #[arg(long = "type")]
        pool_type: String,
        #[arg(long)]
        base_job_template: Option<PathBuf>,
        #[arg(long)]
        paused: bool,
        #[arg(long)]
        concurrency_limit: Option<u32>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// List work pools and their status.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show one work pool, including its base job template.
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Change a pool's description, template or concurrency limit.
    Update {
        name: String,
        #[arg(long)]
        base_job_template: Option<PathBuf>,
        #[arg(long, conflicts_with = "no_concurrency_limit")]
        concurrency_limit: Option<u32>,
        #[arg(long)]
        no_concurrency_limit: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// Stop handing out the pool's runs.
    Pause { name: String },
    /// Hand out the pool's runs again.
    Resume { name: String },
    /// Delete a pool that no deployment uses.
    Delete { name: String },
    /// The pool's upcoming (SCHEDULED) runs.
    Preview {
        name: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Print a pool type's default base job template (JSON).
    GetDefaultBaseJobTemplate {
        #[arg(long = "type")]
        pool_type: String,
    },
}

fn read_template(path: &PathBuf) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))
}

pub async fn run(command: WorkPoolCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        WorkPoolCommand::Create {
            name,
            pool_type,
            base_job_template,
            paused,
            concurrency_limit,
            description,
            output,
        } => {
            let base_job_template = base_job_template.as_ref().map(read_template).transpose()?;
            let spec = PoolSpec {
                name,
                pool_type,
                description,
                base_job_template,
                concurrency_limit,
                paused,
            };
            let pool: PoolView = client.post("/api/work-pools", &spec).await?;
            if output == OutputFormat::Json {
                print_json(&pool)?;
            } else {
                println!(
                    "Created work pool `{}` of type `{}`",
                    pool.pool.name, pool.pool.pool_type
                );
            }
        }
        WorkPoolCommand::Ls { output } => {
            let pools: Vec<PoolView> = client.get("/api/work-pools").await?;
            if output == OutputFormat::Json {
                return print_json(&pools).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = pools
                .iter()
                .map(|p| {
                    vec![
                        p.pool.name.clone(),
                        p.pool.pool_type.clone(),
                        enum_text(&p.status),
                        p.pool
                            .concurrency_limit
                            .map_or("-".into(), |l| l.to_string()),
                        p.workers_online.to_string(),
                    ]
                })
                .collect();
            print_table(&["NAME", "TYPE", "STATUS", "CONCURRENCY", "WORKERS"], &rows);
        }
        WorkPoolCommand::Inspect { name, output } => {
            let pool: PoolView = client.get(&format!("/api/work-pools/{name}")).await?;
            if output == OutputFormat::Json {
                return print_json(&pool).map(|()| ExitCode::SUCCESS);
            }
            println!("name:              {}", pool.pool.name);
            println!("type:              {}", pool.pool.pool_type);
            println!("status:            {}", enum_text(&pool.status));
            println!("paused:            {}", pool.pool.paused);
            println!(
                "concurrency limit: {}",
                pool.pool
                    .concurrency_limit
                    .map_or("none".into(), |l| l.to_string())
            );
            println!("workers online:    {}", pool.workers_online);
            println!("base job template:");
            println!(
                "{}",
                serde_json::to_string_pretty(&pool.pool.base_job_template)?
            );
        }
        WorkPoolCommand::Update {
            name,
            base_job_template,
            concurrency_limit,
            no_concurrency_limit,
            description,
        } => {
            let patch = PoolPatch {
                description,
                base_job_template: base_job_template.as_ref().map(read_template).transpose()?,
                concurrency_limit: if no_concurrency_limit {
                    Some(None)
                } else {
                    concurrency_limit.map(Some)
                },
                paused: None,
            };
            let _: PoolView = client
                .patch(&format!("/api/work-pools/{name}"), &patch)
                .await?;
            println!("Updated work pool `{name}`");
        }
        WorkPoolCommand::Pause { name } => set_paused(&client, &name, true).await?,
        WorkPoolCommand::Resume { name } => set_paused(&client, &name, false).await?,
        WorkPoolCommand::Delete { name } => {
            client.delete(&format!("/api/work-pools/{name}")).await?;
            println!("Deleted work pool `{name}`");
        }
        WorkPoolCommand::Preview {
            name,
            limit,
            output,
        } => {
            let runs: Vec<FlowRun> = client
                .get(&format!("/api/work-pools/{name}/upcoming?limit={limit}"))
                .await?;
            if output == OutputFormat::Json {
                return print_json(&runs).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        r.scheduled_at.to_rfc3339(),
                        r.name.clone(),
                        r.deployment.clone(),
                        r.queue.clone(),
                        r.id.clone(),
                    ]
                })
                .collect();
            print_table(&["SCHEDULED", "NAME", "DEPLOYMENT", "QUEUE", "ID"], &rows);
        }
        WorkPoolCommand::GetDefaultBaseJobTemplate { pool_type } => {
            let template: serde_json::Value = client
                .get(&format!(
                    "/api/pool-types/{pool_type}/default-base-job-template"
                ))
                .await?;
            print_json(&template)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_paused(
    client: &crate::client::Client,
    name: &str,
    paused: bool,
) -> anyhow::Result<()> {
    let patch = PoolPatch {
        paused: Some(paused),
        ..PoolPatch::default()
    };
    let _: PoolView = client
        .patch(&format!("/api/work-pools/{name}"), &patch)
        .await?;
    println!(
        "{} work pool `{name}`",
        if paused { "Paused" } else { "Resumed" }
    );
    Ok(())
}
