//! `host work-queue ...`.

use super::output::{enum_text, print_json, print_table};
use super::{ApiArgs, OutputFormat};
use crate::control::{QueuePatch, QueueSpec, QueueView};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum WorkQueueCommand {
    /// Create a queue in a pool.
    Create {
        name: String,
        #[arg(long)]
        pool: String,
        /// 1 is the highest; taking a used priority moves the others down.
        #[arg(long)]
        priority: Option<u32>,
        #[arg(long)]
        concurrency_limit: Option<u32>,
        #[arg(long)]
        paused: bool,
    },
    /// List a pool's queues by priority.
    Ls {
        #[arg(long)]
        pool: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show one queue.
    Inspect {
        name: String,
        #[arg(long)]
        pool: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Change a queue's priority, concurrency limit or description.
    Update {
        name: String,
        #[arg(long)]
        pool: String,
        /// 1 is the highest; taking a used priority moves the others down.
        #[arg(long)]
        priority: Option<u32>,
        #[arg(long, conflicts_with = "no_concurrency_limit")]
        concurrency_limit: Option<u32>,
        /// Remove the concurrency limit.
        #[arg(long)]
        no_concurrency_limit: bool,
        #[arg(long)]
        description: Option<String>,
    },
    Pause {
        name: String,
        #[arg(long)]
        pool: String,
    },
    Resume {
        name: String,
        #[arg(long)]
        pool: String,
    },
    Delete {
        name: String,
        #[arg(long)]
        pool: String,
    },
}

pub async fn run(command: WorkQueueCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        WorkQueueCommand::Create {
            name,
            pool,
            priority,
            concurrency_limit,
            paused,
        } => {
            let spec = QueueSpec {
                name,
                description: String::new(),
                priority,
                concurrency_limit,
                paused,
            };
            let queue: QueueView = client
                .post(&format!("/api/work-pools/{pool}/queues"), &spec)
                .await?;
            println!(
                "Created work queue `{}` in `{pool}` with priority {}",
                queue.queue.name, queue.queue.priority
            );
        }
        WorkQueueCommand::Ls { pool, output } => {
            let queues: Vec<QueueView> = client
                .get(&format!("/api/work-pools/{pool}/queues"))
                .await?;
            if output == OutputFormat::Json {
                return print_json(&queues).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = queues
                .iter()
                .map(|q| {
                    vec![
                        q.queue.name.clone(),
                        q.queue.priority.to_string(),
                        enum_text(&q.status),
                        q.queue
                            .concurrency_limit
                            .map_or("-".into(), |l| l.to_string()),
                        q.queue
                            .last_polled
                            .map_or("never".into(), |t| t.to_rfc3339()),
                    ]
                })
                .collect();
            print_table(
                &["NAME", "PRIORITY", "STATUS", "CONCURRENCY", "LAST POLLED"],
                &rows,
            );
        }
        WorkQueueCommand::Inspect { name, pool, output } => {
            let queue: QueueView = client
                .get(&format!("/api/work-pools/{pool}/queues/{name}"))
                .await?;
            if output == OutputFormat::Json {
                return print_json(&queue).map(|()| ExitCode::SUCCESS);
            }
            println!("name:              {}", queue.queue.name);
            println!("pool:              {}", queue.queue.pool);
            println!("priority:          {}", queue.queue.priority);
            println!("status:            {}", enum_text(&queue.status));
            println!(
                "concurrency limit: {}",
                queue
                    .queue
                    .concurrency_limit
                    .map_or("none".into(), |l| l.to_string())
            );
        }
        WorkQueueCommand::Update {
            name,
            pool,
            priority,
            concurrency_limit,
            no_concurrency_limit,
            description,
        } => {
            let patch = QueuePatch {
                description,
                priority,
                concurrency_limit: if no_concurrency_limit {
                    Some(None)
                } else {
                    concurrency_limit.map(Some)
                },
                paused: None,
            };
            if patch.description.is_none()
                && patch.priority.is_none()
                && patch.concurrency_limit.is_none()
            {
                anyhow::bail!(
                    "nothing to change: give --priority, --concurrency-limit, --no-concurrency-limit or --description"
                );
            }
            let queue: QueueView = client
                .patch(&format!("/api/work-pools/{pool}/queues/{name}"), &patch)
                .await?;
            println!(
                "Updated work queue `{name}` in `{pool}`: priority {}, concurrency limit {}",
                queue.queue.priority,
                queue
                    .queue
                    .concurrency_limit
                    .map_or("none".into(), |l| l.to_string())
            );
        }
        WorkQueueCommand::Pause { name, pool } => set_paused(&client, &pool, &name, true).await?,
        WorkQueueCommand::Resume { name, pool } => set_paused(&client, &pool, &name, false).await?,
        WorkQueueCommand::Delete { name, pool } => {
            client
                .delete(&format!("/api/work-pools/{pool}/queues/{name}"))
                .await?;
            println!("Deleted work queue `{name}` from `{pool}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_paused(
    client: &crate::client::Client,
    pool: &str,
    name: &str,
    paused: bool,
) -> anyhow::Result<()> {
    let patch = QueuePatch {
        paused: Some(paused),
        ..QueuePatch::default()
    };
    let _: QueueView = client
        .patch(&format!("/api/work-pools/{pool}/queues/{name}"), &patch)
        .await?;
    println!(
        "{} work queue `{name}` in `{pool}`",
        if paused { "Paused" } else { "Resumed" }
    );
    Ok(())
}
