//! `host plugin ls | inspect | test | new`.

use super::output::{print_json, print_table};
use super::{OutputFormat, RuntimeArgs};
use crate::plugins::{self, Registry};
use crate::runtime::LoadedPlugin;
use crate::scaffold::{self, Shape};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// List the plugins this host can run.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Show everything a plugin's `describe` returns.
    Inspect {
        /// A plugin name, or a path to a component file.
        plugin: String,
        #[command(flatten)]
        grants: FileGrants,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Run the conformance suite against a loaded plugin or a `.wasm` file.
    Test {
        /// A plugin name, or a path to a component file.
        plugin: String,
        #[command(flatten)]
        grants: FileGrants,
        /// Job variables (a JSON object) over the plugin's examples, say an
        /// endpoint of your own for the runs to reach.
        #[arg(long, value_name = "JSON")]
        variables: Option<String>,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Write a new plugin crate that builds and passes `host plugin test`.
    New {
        /// The plugin's name: its work pool type and crate name.
        name: String,
        /// What each flow run becomes.
        #[arg(long, value_enum, default_value_t = Shape::Process)]
        capability: Shape,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// host's `sdk/` directory (default: the one this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// What a plugin given as a file is granted (a named plugin has its
/// plugin directory's `grants.toml`).
#[derive(clap::Args)]
pub struct FileGrants {
    /// A capability to grant (repeatable).
    #[arg(long = "grant")]
    names: Vec<String>,
    /// A grants file (as a plugin directory's grants.toml): the section
    /// named after the file's stem, with its allowed origins and policies.
    #[arg(long = "grants", value_name = "FILE")]
    file: Option<PathBuf>,
}

pub async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Ls { output, runtime } => {
            let registry =
                Registry::load(&runtime.runtime()?, runtime.plugin_dir.as_deref()).await?;
            ls(&registry, output)?;
            for failure in registry.failures() {
                eprintln!("warning: {failure}");
            }
            for warning in registry.warnings() {
                eprintln!("warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Inspect {
            plugin,
            grants,
            output,
            runtime,
        } => {
            let found = find(&runtime.runtime()?, &runtime, &plugin, &grants).await?;
            inspect(&found, output)?;
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test {
            plugin,
            grants,
            variables,
            runtime: args,
        } => {
            let variables = match variables {
                Some(json) => serde_json::from_str(&json)
                    .map_err(|e| anyhow::anyhow!("--variables: not a JSON object: {e}"))?,
                None => serde_json::Map::new(),
            };
            // The suite checks what the example run sends over `http`.
            let runtime = crate::runtime::Runtime::new(crate::runtime::RuntimeConfig {
                record_http: true,
                ..args.config_in(None)?
            })?;
            let found = find(&runtime, &args, &plugin, &grants).await?;
            test(&found, &variables).await
        }
        PluginCommand::New {
            name,
            capability,
            dir,
            sdk,
        } => {
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk_dir);
            let root = scaffold::create(&name, capability, &dir, &sdk)?;
            println!(
                "Created the `{name}` plugin crate in {}. Build and test it:",
                root.display()
            );
            for step in scaffold::next_steps(&name, capability, &root).lines() {
                println!("  {step}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A plugin by name (built-in or from the plugin directory), or a component
/// file with the given grants.
async fn find(
    runtime: &crate::runtime::Runtime,
    args: &RuntimeArgs,
    plugin: &str,
    grants: &FileGrants,
) -> anyhow::Result<std::sync::Arc<LoadedPlugin>> {
    if plugin.ends_with(".wasm") || Path::new(plugin).is_file() {
        let (grants, warnings) =
            plugins::file_grants(Path::new(plugin), &grants.names, grants.file.as_deref())?;
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        let loaded = plugins::load_file(runtime, Path::new(plugin), grants).await?;
        return Ok(std::sync::Arc::new(loaded));
    }
    let registry = Registry::load(runtime, args.plugin_dir.as_deref()).await?;
    registry.get(plugin).ok_or_else(|| {
        anyhow::anyhow!(
            "no plugin named `{plugin}` (available: {})",
            registry.names().join(", ")
        )
    })
}

fn ls(registry: &Registry, output: OutputFormat) -> anyhow::Result<()> {
    let rows: Vec<Value> = registry.plugins().map(|p| summary(p)).collect();
    if output == OutputFormat::Json {
        return print_json(&rows);
    }
    let table: Vec<Vec<String>> = registry
        .plugins()
        .map(|p| {
            vec![
                p.name().to_string(),
                p.info().version.clone(),
                p.info().contract_version.clone(),
                p.source().to_string(),
                capabilities(p).join(", "),
            ]
        })
        .collect();
    print_table(
        &["NAME", "VERSION", "CONTRACT", "SOURCE", "CAPABILITIES"],
        &table,
    );
    Ok(())
}

fn capabilities(plugin: &LoadedPlugin) -> Vec<String> {
    plugin
        .grants()
        .iter()
        .map(|c| c.name().to_string())
        .collect()
}

fn summary(plugin: &LoadedPlugin) -> Value {
    json!({
        "name": plugin.name(),
        "version": plugin.info().version,
        "contract_version": plugin.info().contract_version,
        "source": plugin.source().to_string(),
        "capabilities": capabilities(plugin),
    })
}

fn inspect(plugin: &LoadedPlugin, output: OutputFormat) -> anyhow::Result<()> {
    let info = plugin.info();
    let template: Value = serde_json::from_str(&info.default_base_job_template)?;
    let example: Value = serde_json::from_str(&info.example_variables)?;
    if output == OutputFormat::Json {
        let mut value = summary(plugin);
        value["description"] = json!(info.description);
        value["declared_capabilities"] = json!(info.capabilities);
        value["default_base_job_template"] = template;
        value["example_variables"] = example;
        return print_json(&value);
    }
    println!("name:              {}", info.name);
    println!("version:           {}", info.version);
    println!("contract version:  {}", info.contract_version);
    println!("description:       {}", info.description);
    println!("source:            {}", plugin.source());
    println!("capabilities:      {}", capabilities(plugin).join(", "));
    println!("example variables: {example}");
    println!("default base job template:");
    println!("{}", serde_json::to_string_pretty(&template)?);
    Ok(())
}

async fn test(
    plugin: &LoadedPlugin,
    variables: &serde_json::Map<String, Value>,
) -> anyhow::Result<ExitCode> {
    println!("testing plugin `{}` ({})", plugin.name(), plugin.source());
    let checks = crate::conformance::run_with(plugin, variables).await;
    let mut failed = Vec::new();
    for check in &checks {
        match &check.outcome {
            Ok(detail) => println!("  ok      {:<26} {detail}", check.name),
            Err(reason) => {
                println!("  FAILED  {:<26} {reason}", check.name);
                failed.push(check.name);
            }
        }
        for note in &check.notes {
            println!("          {note}");
        }
    }
    if failed.is_empty() {
        println!("{} checks passed", checks.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} of {} checks failed: {}",
            failed.len(),
            checks.len(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
