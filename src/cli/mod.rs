//! The `flowgate` command line.

mod tenant;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret as _;

use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, PLATFORM, RequestMeta, Trail, verify};
use crate::config::Settings;
use crate::http::{ServeOptions, Server, request_id};
use crate::openapi;
use crate::telemetry::{self, LogTarget, init_logging};
use crate::tenancy::Slug;

#[derive(Debug, Parser)]
#[command(
    name = "flowgate",
    version,
    about = "Multi-tenant workflow automation with security as the product"
)]
pub struct Cli {
    /// A TOML configuration file; FLOWGATE_* environment variables override it.
    #[arg(long, global = true, env = "FLOWGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server (embedded defaults when nothing is configured).
    Serve,
    /// Migrate the control plane and every tenant schema.
    Migrate,
    /// Onboard and manage tenants.
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Work with audit trails.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Work with tenants' encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Rotate a tenant's key-encryption key and re-wrap its data keys, printing progress.
    Rotate { slug: String },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify a tenant's audit hash chain and signed checkpoints (`platform`: the platform's
    /// own trail); exit 1 on any break.
    Verify { slug: String },
}

/// Runs the command line; the exit code is 0 on success, 1 when a check failed, 2 on errors.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Openapi = cli.command {
        print!("{}", openapi::document_json());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("flowgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // Before the runtime: the exporters' blocking HTTP client must not live inside it. Held to
    // the end, when dropping it flushes what is queued.
    let _exporters = match (&cli.command, &settings.otlp_endpoint) {
        (Command::Serve, Some(endpoint)) => match telemetry::otlp::start(endpoint) {
            Ok(exporters) => Some(exporters),
            Err(e) => {
                eprintln!(
                    "flowgate: FLOWGATE_OTLP_ENDPOINT: cannot start the OTLP exporter: {e:#}"
                );
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flowgate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    let target = match command {
        Command::Serve => LogTarget::Stdout,
        _ => LogTarget::Stderr,
    };
    // Held to the end: dropping it flushes the lines still queued.
    let _logs = init_logging(&settings.log_filter, target);
    match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => with_state(settings, migrate).await,
        Command::Tenant { command } => {
            with_state(settings, |state| tenant::run(state, command)).await
        }
        Command::Audit {
            command: AuditCommand::Verify { slug },
        } => with_state(settings, |state| verify_audit(state, slug)).await,
        Command::Keys {
            command: KeysCommand::Rotate { slug },
        } => with_state(settings, |state| rotate_keys(state, slug)).await,
        Command::Openapi => Ok(ExitCode::SUCCESS),
    }
}

/// Opens the services, runs `f`, then lets the audit writer finish.
async fn with_state<F, Fut>(settings: Settings, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(std::sync::Arc<AppState>) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    let opened = AppState::open(settings).await?;
    print_generated_token(opened.generated_operator_token.as_ref());
    let code = f(opened.state).await;
    opened.audit_task.await?;
    code
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    if cfg!(feature = "insecure-bench") {
        if std::env::var("FLOWGATE_INSECURE_BENCH").as_deref() != Ok("1") {
            anyhow::bail!(
                "this binary was built with the `insecure-bench` feature (no authorization, no audit); \
                 it only starts with FLOWGATE_INSECURE_BENCH=1, for benchmarks"
            );
        }
        tracing::warn!("INSECURE BENCH BUILD: tenant requests are neither authorized nor audited");
    }
    let listener = TcpListener::bind(settings.listen).map_err(|e| {
        anyhow::anyhow!("FLOWGATE_LISTEN: cannot listen on {}: {e}", settings.listen)
    })?;
    let admin_listener = settings
        .admin_listen
        .map(|addr| {
            TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("FLOWGATE_ADMIN_LISTEN: cannot listen on {addr}: {e}"))
        })
        .transpose()?;
    let opened = AppState::open(settings).await?;
    print_generated_token(opened.generated_operator_token.as_ref());
    let state = opened.state;
    migrate_tenants(&state, false).await?;
    let server = Server::start(
        std::sync::Arc::clone(&state),
        ServeOptions {
            listener,
            admin_listener,
            handle_signals: true,
        },
    )?;
    tracing::info!(addr = %server.addr, public_url = %state.settings.public_url, "flowgate is serving");
    server.wait().await?;
    tracing::info!("stopped; flushing the audit trail");
    drop(state);
    opened.audit_task.await?;
    Ok(ExitCode::SUCCESS)
}

/// The operator token is shown once, on the terminal, never through the log.
fn print_generated_token(token: Option<&secrecy::SecretString>) {
    if let Some(token) = token {
        eprintln!(
            "\nflowgate: generated the platform operator token (shown once; set FLOWGATE_OPERATOR_TOKEN to choose your own):\n\n    {}\n",
            token.expose_secret()
        );
    }
}

async fn migrate(state: std::sync::Arc<AppState>) -> anyhow::Result<ExitCode> {
    println!("control plane: up to date");
    migrate_tenants(&state, true).await?;
    Ok(ExitCode::SUCCESS)
}

/// Applies pending migrations to every tenant, optionally printing progress.
async fn migrate_tenants(state: &AppState, progress: bool) -> anyhow::Result<()> {
    let tenants = state.tenants.list().await?;
    let total = tenants.len();
    for (i, tenant) in tenants.iter().enumerate() {
        let applied = state.dbs.migrate_tenant(&tenant.slug).await?;
        if progress {
            println!(
                "[{}/{total}] tenant {}: {applied} migration(s) applied",
                i + 1,
                tenant.slug
            );
        }
    }
    if progress {
        println!("{total} tenant(s) migrated");
    }
    Ok(())
}

async fn verify_audit(state: std::sync::Arc<AppState>, name: String) -> anyhow::Result<ExitCode> {
    let trail = if name == PLATFORM {
        Trail::Platform
    } else {
        let slug = Slug::parse(&name).map_err(|e| anyhow::anyhow!("tenant slug: {e}"))?;
        if state.tenants.load(&slug).await?.is_none() {
            anyhow::bail!("no tenant `{slug}`");
        }
        Trail::Tenant(slug)
    };
    let report = verify(&state.dbs, state.keystore.as_ref(), trail).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Rotates the tenant's key-encryption key, then re-wraps its data keys here, printing progress;
/// the rotation is an event of the tenant's audit trail.
async fn rotate_keys(state: std::sync::Arc<AppState>, name: String) -> anyhow::Result<ExitCode> {
    let slug = Slug::parse(&name).map_err(|e| anyhow::anyhow!("tenant slug: {e}"))?;
    if state.tenants.load(&slug).await?.is_none() {
        anyhow::bail!("no tenant `{slug}`");
    }
    let version = state.envelope.rotate(&slug).await?;
    println!("tenant {slug}: key-encryption key now at version {version}");
    let rewrapped = state
        .envelope
        .rewrap(&slug, |done, total| {
            println!("re-wrapped {done}/{total} data key(s)")
        })
        .await?;
    let event = AuditEvent::new(&cli_meta(), "encryption_key.rotate", "tenant")
        .actor("operator", "cli")
        .outcome(Outcome::Allow, 200)
        .detail("version", version)
        .detail("rewrapped", rewrapped);
    state.audit.record(&slug, event).await?;
    let status = state.envelope.status(&slug).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(ExitCode::SUCCESS)
}

/// Audit context of a command-line action.
fn cli_meta() -> RequestMeta {
    RequestMeta {
        request_id: request_id::generate(),
        user_agent: Some(format!("flowgate-cli/{}", env!("CARGO_PKG_VERSION"))),
        ..RequestMeta::default()
    }
}
