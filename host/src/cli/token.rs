//! `host token ...`: named API tokens, through the API (an admin's token),
//! so they work against a remote server and every replica sees them.

use super::output::{print_json, print_table};
use super::{ApiArgs, OutputFormat};
use crate::control::{NewToken, TokenSpec, TokenView};
use crate::model::Role;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once, on stdout, and kept nowhere.
    Create {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A pool a deployer or worker token covers (repeatable, at least one);
        /// admin and viewer tokens take none.
        #[arg(long = "pool")]
        pools: Vec<String>,
        /// `json`: the token and its secret as one object.
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// List tokens: name, role, pools, created (never a secret).
    Ls {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Revoke a token: every replica refuses it from its next request.
    Revoke { name: String },
}

/// `--role`.
#[derive(clap::ValueEnum, Clone, Copy)]
pub enum RoleArg {
    /// Everything, tokens included.
    Admin,
    /// Deployments and their runs in its pools.
    Deployer,
    /// Claims, heartbeats, states and logs in its pools, as itself.
    Worker,
    /// Reads only.
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Deployer => Role::Deployer,
            RoleArg::Worker => Role::Worker,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

pub async fn run(command: TokenCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        TokenCommand::Create {
            name,
            role,
            pools,
            output,
        } => {
            let spec = TokenSpec {
                name,
                role: role.into(),
                pools,
            };
            let created: NewToken = client.post("/api/tokens", &spec).await?;
            if output == OutputFormat::Json {
                return print_json(&created).map(|()| ExitCode::SUCCESS);
            }
            // The secret alone on stdout (`> file` keeps it), the rest for people.
            println!("{}", created.secret);
            eprintln!(
                "Created token `{}` ({}); its secret above is shown only now",
                created.token.name,
                scope(&created.token)
            );
        }
        TokenCommand::Ls { output } => {
            let tokens: Vec<TokenView> = client.get("/api/tokens").await?;
            if output == OutputFormat::Json {
                return print_json(&tokens).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.role.to_string(),
                        if t.pools.is_empty() {
                            "*".into()
                        } else {
                            t.pools.join(",")
                        },
                        t.created.to_rfc3339(),
                    ]
                })
                .collect();
            print_table(&["NAME", "ROLE", "POOLS", "CREATED"], &rows);
        }
        TokenCommand::Revoke { name } => {
            client.delete(&format!("/api/tokens/{name}")).await?;
            println!("Revoked token `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn scope(token: &TokenView) -> String {
    if token.pools.is_empty() {
        format!("{} of every pool", token.role)
    } else {
        format!("{} of {}", token.role, token.pools.join(", "))
    }
}
