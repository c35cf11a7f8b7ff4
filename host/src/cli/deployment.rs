//! `host deployment ...`.

use super::flow_run::watch;
use super::output::{parse_pairs, print_json, print_table};
use super::{ApiArgs, OutputFormat};
use crate::control::schedule_words;
use crate::control::{DeploymentSpec, RunRequest, ScheduleUpdate, UpsertOutcome};
use crate::model::{Deployment, FlowRun, Schedule};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DeploymentCommand {
    /// Create or update a deployment: `host deployment create FLOW/NAME --pool P -- COMMAND...`
    Create {
        /// FLOW/NAME
        name: String,
        #[arg(long)]
        pool: String,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        image: Option<String>,
        /// A flow parameter (repeatable); values are JSON when they parse as JSON.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// A job variable (repeatable); `env.KEY=VALUE` sets one environment variable.
        #[arg(long = "job-variable", value_name = "KEY=VALUE")]
        job_variables: Vec<String>,
        #[arg(long, conflicts_with = "interval")]
        cron: Option<String>,
        /// Seconds between scheduled runs.
        #[arg(long)]
        interval: Option<u64>,
        /// Time zone of the schedule.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        #[arg(long)]
        concurrency_limit: Option<u32>,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List deployments.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show one deployment.
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Delete a deployment and its scheduled runs (runs that started stay).
    Delete { name: String },
    /// Pause a deployment: its schedules make no runs and no worker claims its runs.
    Pause { name: String },
    /// Resume a paused deployment.
    Resume { name: String },
    /// A deployment's schedules: list them, turn one on or off, change one.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Create a flow run now; with --watch, follow it to the end.
    Run {
        name: String,
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[arg(long = "job-variable", value_name = "KEY=VALUE")]
        job_variables: Vec<String>,
        /// Stream states and logs until the run ends; exit non-zero unless it COMPLETED.
        #[arg(long)]
        watch: bool,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

/// `host deployment schedule ...` (Prefect's `prefect deployment schedule`).
/// Schedules are named by their index in `ls`, from 0.
#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// List a deployment's schedules, in words, with whether each is active.
    Ls {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Turn a schedule off: it makes no runs, and its future scheduled runs go.
    Pause { name: String, index: usize },
    /// Turn a schedule back on.
    Resume { name: String, index: usize },
    /// Change a schedule's cron, interval or time zone.
    Set {
        name: String,
        index: usize,
        #[arg(long, conflicts_with = "interval")]
        cron: Option<String>,
        /// Seconds between scheduled runs.
        #[arg(long)]
        interval: Option<u64>,
        #[arg(long)]
        timezone: Option<String>,
    },
}

/// Splits `FLOW/NAME`, with a message that says what was expected.
pub fn split_name(name: &str) -> anyhow::Result<(&str, &str)> {
    match name.split_once('/') {
        Some((flow, deployment))
            if !flow.is_empty() && !deployment.is_empty() && !deployment.contains('/') =>
        {
            Ok((flow, deployment))
        }
        _ => anyhow::bail!("deployment names are FLOW/NAME, got {name:?}"),
    }
}

pub async fn run(command: DeploymentCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        DeploymentCommand::Create {
            name,
            pool,
            queue,
            image,
            params,
            job_variables,
            cron,
            interval,
            timezone,
            concurrency_limit,
            command,
        } => {
            let (flow, deployment) = split_name(&name)?;
            let schedules = match (cron, interval) {
                (None, None) => vec![],
                (cron, interval_seconds) => {
                    vec![Schedule {
                        interval_seconds,
                        cron,
                        timezone,
                        anchor: None,
                        active: true,
                    }]
                }
            };
            let spec = DeploymentSpec {
                flow: flow.into(),
                name: deployment.into(),
                pool,
                queue,
                command,
                image,
                parameters: parse_pairs("--param", &params)?,
                job_variables: parse_pairs("--job-variable", &job_variables)?,
                schedules,
                concurrency_limit,
                paused: false,
            };
            let outcome: UpsertOutcome = client.put("/api/deployments", &spec).await?;
            let verb = if outcome.created {
                "Created"
            } else {
                "Updated"
            };
            println!(
                "{verb} deployment `{}` in pool `{}`",
                outcome.deployment.full_name(),
                outcome.deployment.pool
            );
        }
        DeploymentCommand::Ls { output } => {
            let deployments: Vec<Deployment> = client.get("/api/deployments").await?;
            if output == OutputFormat::Json {
                return print_json(&deployments).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = deployments
                .iter()
                .map(|d| {
                    let schedule = d
                        .schedules
                        .iter()
                        .map(|s| match (&s.cron, s.interval_seconds) {
                            (Some(cron), _) => format!("cron {cron} ({})", s.timezone),
                            (None, Some(seconds)) => format!("every {seconds}s"),
                            _ => "-".into(),
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    vec![
                        d.full_name(),
                        d.pool.clone(),
                        d.queue.clone(),
                        if schedule.is_empty() {
                            "-".into()
                        } else {
                            schedule
                        },
                        d.id.clone(),
                    ]
                })
                .collect();
            print_table(&["NAME", "POOL", "QUEUE", "SCHEDULE", "ID"], &rows);
        }
        DeploymentCommand::Inspect { name, output } => {
            let (flow, deployment) = split_name(&name)?;
            let deployment: Deployment = client
                .get(&format!("/api/deployments/{flow}/{deployment}"))
                .await?;
            if output == OutputFormat::Json {
                return print_json(&deployment).map(|()| ExitCode::SUCCESS);
            }
            println!("{}", serde_json::to_string_pretty(&deployment)?);
        }
        DeploymentCommand::Delete { name } => {
            let (flow, deployment) = split_name(&name)?;
            client
                .delete(&format!("/api/deployments/{flow}/{deployment}"))
                .await?;
            println!("Deleted deployment `{name}`");
        }
        DeploymentCommand::Pause { name } => set_paused(&client, &name, true).await?,
        DeploymentCommand::Resume { name } => set_paused(&client, &name, false).await?,
        DeploymentCommand::Schedule(command) => schedule(&client, command).await?,
        DeploymentCommand::Run {
            name,
            params,
            job_variables,
            watch: follow,
            output,
        } => {
            let (flow, deployment) = split_name(&name)?;
            let request = RunRequest {
                parameters: parse_pairs("--param", &params)?,
                job_variables: parse_pairs("--job-variable", &job_variables)?,
                ..RunRequest::default()
            };
            let run: FlowRun = client
                .post(
                    &format!("/api/deployments/{flow}/{deployment}/runs"),
                    &request,
                )
                .await?;
            if output == OutputFormat::Json && !follow {
                return print_json(&run).map(|()| ExitCode::SUCCESS);
            }
            println!(
                "Created flow run `{}` ({}) of `{name}`: {}",
                run.name, run.id, run.state.name
            );
            if follow {
                return watch(&client, &run.id).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_paused(client: &crate::client::Client, name: &str, pause: bool) -> anyhow::Result<()> {
    let (flow, deployment) = split_name(name)?;
    let action = if pause { "pause" } else { "resume" };
    let _: Deployment = client
        .post(
            &format!("/api/deployments/{flow}/{deployment}/{action}"),
            &serde_json::json!({}),
        )
        .await?;
    println!(
        "{} deployment `{name}`",
        if pause { "Paused" } else { "Resumed" }
    );
    Ok(())
}

async fn schedule(client: &crate::client::Client, command: ScheduleCommand) -> anyhow::Result<()> {
    let (name, index, update) = match command {
        ScheduleCommand::Ls { name, output } => {
            let (flow, deployment) = split_name(&name)?;
            let deployment: Deployment = client
                .get(&format!("/api/deployments/{flow}/{deployment}"))
                .await?;
            if output == OutputFormat::Json {
                return print_json(&deployment.schedules);
            }
            let rows: Vec<Vec<String>> = deployment
                .schedules
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let expression = match (&s.cron, s.interval_seconds) {
                        (Some(cron), _) => cron.clone(),
                        (None, Some(seconds)) => format!("{seconds}s"),
                        _ => "-".into(),
                    };
                    vec![
                        i.to_string(),
                        if s.active { "yes" } else { "no" }.into(),
                        expression,
                        schedule_words::describe(s),
                    ]
                })
                .collect();
            print_table(&["INDEX", "ACTIVE", "SCHEDULE", "DESCRIPTION"], &rows);
            return Ok(());
        }
        ScheduleCommand::Pause { name, index } => (
            name,
            index,
            ScheduleUpdate {
                active: Some(false),
                ..ScheduleUpdate::default()
            },
        ),
        ScheduleCommand::Resume { name, index } => (
            name,
            index,
            ScheduleUpdate {
                active: Some(true),
                ..ScheduleUpdate::default()
            },
        ),
        ScheduleCommand::Set {
            name,
            index,
            cron,
            interval,
            timezone,
        } => {
            if cron.is_none() && interval.is_none() && timezone.is_none() {
                anyhow::bail!("give --cron, --interval or --timezone");
            }
            let update = ScheduleUpdate {
                active: None,
                cron,
                interval_seconds: interval,
                timezone,
            };
            (name, index, update)
        }
    };
    let (flow, deployment) = split_name(&name)?;
    let updated: Deployment = client
        .patch(
            &format!("/api/deployments/{flow}/{deployment}/schedules/{index}"),
            &update,
        )
        .await?;
    if let Some(s) = updated.schedules.get(index) {
        let state = if s.active { "active" } else { "inactive" };
        println!(
            "Schedule {index} of `{name}`: {} ({state})",
            schedule_words::describe(s)
        );
    }
    Ok(())
}
