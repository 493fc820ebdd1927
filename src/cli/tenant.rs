//! `flowgate tenant …`

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};
use secrecy::ExposeSecret as _;

use super::cli_meta;
use crate::app::AppState;
use crate::directory::clean_name;
use crate::identity::operator::OperatorAuthority;
use crate::platform::{self, NewTenant};
use crate::tenancy::{Environment, Slug};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Onboard a tenant and print its bootstrap admin API key once.
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "dev")]
        environment: EnvironmentArg,
    },
    /// List tenants.
    List,
    /// Suspend a tenant: its API answers 403 until resumed.
    Suspend { slug: String },
    /// Resume a suspended tenant.
    Resume { slug: String },
    /// Delete a tenant with its data and keys.
    Delete { slug: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EnvironmentArg {
    Dev,
    Stage,
    Prod,
}

impl From<EnvironmentArg> for Environment {
    fn from(e: EnvironmentArg) -> Self {
        match e {
            EnvironmentArg::Dev => Environment::Dev,
            EnvironmentArg::Stage => Environment::Stage,
            EnvironmentArg::Prod => Environment::Prod,
        }
    }
}

fn slug(s: &str) -> anyhow::Result<Slug> {
    Slug::parse(s).map_err(|e| anyhow::anyhow!("tenant slug `{s}`: {e}"))
}

pub async fn run(state: Arc<AppState>, command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Create {
            slug: raw,
            name,
            environment,
        } => {
            let new = NewTenant {
                slug: Slug::parse_new(&raw)
                    .map_err(|e| anyhow::anyhow!("tenant slug `{raw}`: {e}"))?,
                name: clean_name(name.as_deref().unwrap_or(&raw), 200)
                    .map_err(|e| anyhow::anyhow!("--name {e}"))?,
                environment: environment.into(),
            };
            let onboarded =
                platform::create_tenant(&state, &OperatorAuthority::console(), new, &cli_meta())
                    .await?;
            let t = &onboarded.tenant;
            println!(
                "created tenant {} ({}, {})",
                t.slug,
                t.name,
                t.environment.as_str()
            );
            println!("admin API key (shown once):");
            println!("{}", onboarded.admin_api_key.expose_secret());
        }
        TenantCommand::List => {
            for t in state.tenants.list().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    t.slug,
                    t.status.as_str(),
                    t.environment.as_str(),
                    t.name
                );
            }
        }
        TenantCommand::Suspend { slug: s } => {
            platform::set_suspended(
                &state,
                &OperatorAuthority::console(),
                &slug(&s)?,
                true,
                &cli_meta(),
            )
            .await?;
            println!("suspended tenant {s}");
        }
        TenantCommand::Resume { slug: s } => {
            platform::set_suspended(
                &state,
                &OperatorAuthority::console(),
                &slug(&s)?,
                false,
                &cli_meta(),
            )
            .await?;
            println!("resumed tenant {s}");
        }
        TenantCommand::Delete { slug: s } => {
            platform::delete_tenant(
                &state,
                &OperatorAuthority::console(),
                &slug(&s)?,
                &cli_meta(),
            )
            .await?;
            println!("deleted tenant {s} with its data and keys");
        }
    }
    Ok(ExitCode::SUCCESS)
}
