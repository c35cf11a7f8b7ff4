//! `host deploy`: create or update the deployments of a project file
//! (`host.yaml`), building its image first when the file has a `build` section.
//!
//! ```yaml
//! build:                         # optional
//!   dockerfile: Dockerfile       # relative to the project file
//!   context: .                   # default: the project file's directory
//!   tag: repo-info:latest
//! deployments:
//!   - flow: repo-info
//!     name: default
//!     pool: my-docker-pool
//!     command: ["sh", "/flow/repo_info.sh"]
//!     parameters: {repo: host}
//!     job_variables: {image_pull_policy: Never}
//!     schedules: [{cron: "0 9 * * *", timezone: Europe/Paris}]
//! ```

use super::{ApiArgs, RuntimeArgs};
use crate::control::{DeploymentSpec, UpsertOutcome};
use crate::model::Schedule;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The project file.
    #[arg(long, default_value = "host.yaml")]
    file: PathBuf,
    /// Deploy only these deployments (by name or FLOW/NAME); repeatable.
    #[arg(long = "name")]
    names: Vec<String>,
    /// Deploy every deployment of the file.
    #[arg(long)]
    all: bool,
    /// Put the deployments in this pool instead of the file's.
    #[arg(long)]
    pool: Option<String>,
    /// Never ask; fail instead when the choice is ambiguous.
    #[arg(long)]
    no_prompt: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    #[serde(default)]
    build: Option<Build>,
    deployments: Vec<DeploymentEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Build {
    #[serde(default = "default_dockerfile")]
    dockerfile: String,
    #[serde(default)]
    context: Option<String>,
    tag: String,
}

fn default_dockerfile() -> String {
    "Dockerfile".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentEntry {
    flow: String,
    name: String,
    pool: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    command: Option<Command>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    job_variables: Map<String, Value>,
    #[serde(default)]
    schedules: Vec<Schedule>,
    #[serde(default)]
    concurrency_limit: Option<u32>,
}

/// `command: "sh run.sh"` (split on whitespace) or `command: [sh, run.sh]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Command {
    Line(String),
    Argv(Vec<String>),
}

impl Command {
    fn argv(self) -> Vec<String> {
        match self {
            Command::Line(line) => line.split_whitespace().map(String::from).collect(),
            Command::Argv(argv) => argv,
        }
    }
}

fn read_project(path: &Path) -> anyhow::Result<ProjectFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let project: ProjectFile =
        serde_saphyr::from_str(&text).map_err(|e: serde_saphyr::Error| {
            // One line, naming the place; the snippet would repeat the file.
            anyhow::anyhow!("{}: {}", path.display(), e.without_snippet())
        })?;
    if project.deployments.is_empty() {
        anyhow::bail!("{}: no deployments", path.display());
    }
    Ok(project)
}

/// Which deployments to deploy: named, all, the only one, or asked.
fn choose(
    entries: Vec<DeploymentEntry>,
    args: &DeployArgs,
) -> anyhow::Result<Vec<DeploymentEntry>> {
    if args.all {
        return Ok(entries);
    }
    if !args.names.is_empty() {
        let matches = |e: &DeploymentEntry, n: &String| {
            *n == e.name || *n == format!("{}/{}", e.flow, e.name)
        };
        if let Some(missing) = args
            .names
            .iter()
            .find(|n| !entries.iter().any(|e| matches(e, n)))
        {
            anyhow::bail!("no deployment named `{missing}` in {}", args.file.display());
        }
        return Ok(entries
            .into_iter()
            .filter(|e| args.names.iter().any(|n| matches(e, n)))
            .collect());
    }
    if entries.len() == 1 {
        return Ok(entries);
    }
    let interactive =
        !args.no_prompt && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let listed: Vec<String> = entries
        .iter()
        .map(|e| format!("{}/{}", e.flow, e.name))
        .collect();
    if !interactive {
        anyhow::bail!(
            "{} has several deployments ({}); pass --name or --all",
            args.file.display(),
            listed.join(", ")
        );
    }
    for (i, name) in listed.iter().enumerate() {
        println!("  {}) {name}", i + 1);
    }
    print!("Which deployment? [1-{}] ", listed.len());
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    let index: usize = answer
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=listed.len()).contains(n))
        .ok_or_else(|| anyhow::anyhow!("no such choice: {}", answer.trim()))?;
    Ok(entries.into_iter().nth(index - 1).into_iter().collect())
}

pub async fn run(args: DeployArgs, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let runtime = &args.runtime;
    let project = read_project(&args.file)?;
    let base = args
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let chosen = choose(project.deployments, &args)?;
    let built_tag = match &project.build {
        Some(build) => {
            let context = base.join(build.context.as_deref().unwrap_or("."));
            println!(
                "Building {} from {} ...",
                build.tag,
                context.join(&build.dockerfile).display()
            );
            let containers = runtime.runtime()?.containers().clone();
            containers
                .build_image(&context.to_string_lossy(), &build.dockerfile, &build.tag)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("Built image {}", build.tag);
            Some(build.tag.clone())
        }
        None => None,
    };
    let client = api.client()?;
    for entry in chosen {
        let pool = args.pool.clone().or(entry.pool).ok_or_else(|| {
            anyhow::anyhow!(
                "deployment {}/{} has no pool; set `pool:` or pass --pool",
                entry.flow,
                entry.name
            )
        })?;
        let spec = DeploymentSpec {
            flow: entry.flow,
            name: entry.name,
            pool,
            queue: entry.queue,
            command: entry.command.map(Command::argv).unwrap_or_default(),
            image: entry.image.or_else(|| built_tag.clone()),
            parameters: entry.parameters,
            job_variables: entry.job_variables,
            schedules: entry.schedules,
            concurrency_limit: entry.concurrency_limit,
            paused: false,
        };
        let outcome: UpsertOutcome = client.put("/api/deployments", &spec).await?;
        let verb = if outcome.created {
            "Created"
        } else {
            "Updated"
        };
        let d = &outcome.deployment;
        let image = d
            .image
            .as_deref()
            .map(|i| format!(", image {i}"))
            .unwrap_or_default();
        println!(
            "{verb} deployment `{}` in pool `{}`{image}",
            d.full_name(),
            d.pool
        );
    }
    println!("Run one with: host deployment run FLOW/NAME --watch");
    Ok(ExitCode::SUCCESS)
}
