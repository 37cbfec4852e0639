//! The `exchange-connections` binary: `serve` (the default), `worker`,
//! `migrate`, `audit verify`, `schema` and `keygen`.

use clap::{Parser, Subcommand};
use exchange_connections::config::Settings;
use exchange_connections::startup::{self, Application};
use exchange_connections::{crypto::KeyRing, graphql, telemetry, worker};
use std::process::ExitCode;

// Many small, short-lived allocations per request (JSON, GraphQL values):
// mimalloc handles them with less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "exchange-connections",
    version,
    about = "Connect exchange accounts by API key, safely."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL, GraphiQL, health and metrics (the default).
    Serve(Box<Settings>),
    /// Run the health monitor: check due connections until SIGTERM.
    Worker(Box<Settings>),
    /// Apply database migrations.
    Migrate(Box<Settings>),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the GraphQL schema (SDL); `schema.graphql` is its output.
    Schema,
    /// Print a new Fernet key for ENCRYPTION_KEYS.
    Keygen,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every user's audit hash chain; exits non-zero if any is broken.
    Verify(Box<Settings>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Schema) => {
            print!("{}", graphql::sdl());
            ExitCode::SUCCESS
        }
        Some(Command::Keygen) => {
            println!("{}", KeyRing::generate_key());
            ExitCode::SUCCESS
        }
        Some(Command::Serve(settings)) => run(async move { serve(*settings).await }),
        Some(Command::Worker(settings)) => run(async move { worker(*settings).await }),
        Some(Command::Migrate(settings)) => run(async move { migrate(*settings).await }),
        Some(Command::Audit(AuditCommand::Verify(settings))) => run(async move { audit_verify(*settings).await }),
        None => run(async move { serve(Settings::default()).await }),
    }
}

fn run(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    exchange_connections::install_crypto_providers();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_logging(&settings.log_format);
    let (settings, dev) = startup::with_dev_secrets(settings)?;
    let mut config = settings.validate()?;
    config.dev_secrets = dev.is_some();
    let audience = config.jwt_audience.clone();
    let app = Application::build(config).await?;
    let addr = app.local_addr;
    tracing::info!(%addr, "listening");
    if let Some(dev) = dev {
        let token = startup::demo_token(&dev, &audience);
        println!("\nexchange-connections is running (embedded default, development secrets).");
        println!("  GraphiQL:   http://{addr}/graphiql");
        println!("  Demo user:  {}", dev.demo_user_id);
        println!("  Header:     {{\"Authorization\": \"Bearer {token}\"}}\n");
    }
    app.run_until(startup::shutdown_signal()).await
}

/// The health monitor on its own. It never migrates: it refuses to start
/// until the schema is current, and needs no JWT settings: on LISTEN_ADDR it
/// serves only `/healthz`, `/readyz` and `/metrics`.
async fn worker(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_logging(&settings.log_format);
    // Without ENCRYPTION_KEYS: the embedded default's development key, when it runs beside it.
    let settings = if settings.encryption_keys.is_none() && settings.encryption_keys_file.is_none() {
        startup::with_dev_secrets(settings)?.0
    } else {
        settings
    };
    let config = settings.validate_for_worker()?;
    let keyring = KeyRing::parse(config.encryption_keys.expose(), "ENCRYPTION_KEYS")?;
    let db = startup::connect_database(&config.database_url).await?;
    // The health monitor works across users: it needs the system identity.
    exchange_connections::database_role::check(&db, true).await?;
    startup::prepare_schema(&db, false).await?;
    let services = startup::build_services(&config, db.clone(), keyring)?;
    let operations =
        exchange_connections::http::operations_router(db.clone(), services.events.clone(), telemetry::metrics_handle());
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (LISTEN_ADDR): {e}", config.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "worker: health and metrics endpoints");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let endpoints = tokio::spawn(async move {
        let mut stopped = stopped;
        let until = async move { drop(stopped.wait_for(|stop| *stop).await) };
        axum::serve(listener, operations).with_graceful_shutdown(until).await
    });
    worker::run_until_stopped(services.clone(), config.worker.clone(), startup::shutdown_signal()).await;
    let _ = stop.send(true);
    let _ = endpoints.await;
    services.events.shutdown();
    db.close().await.ok();
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_logging(&settings.log_format);
    let url = settings.validate_database_url()?;
    let db = startup::connect_database(&url).await?;
    startup::prepare_schema(&db, true).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Checks every chain: one line per broken chain, then a summary. A broken
/// chain fails the command (exit status 1), as does any error.
async fn audit_verify(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_logging(&settings.log_format);
    let url = settings.validate_database_url()?;
    let db = startup::connect_database(&url).await?;
    startup::prepare_schema(&db, false).await?;
    exchange_connections::database_role::check_sees_all(&db).await?;
    let tenant_db = exchange_connections::service::tenancy::TenantDb::new(db.clone());
    let summary = exchange_connections::service::audit_verify::verify_all(&tenant_db, |user_id, report| {
        println!(
            "user {user_id}: chain broken at seq {}: {}",
            report.first_broken_seq.unwrap_or_default(),
            report.reason.as_deref().unwrap_or("unknown")
        );
    })
    .await?;
    db.close().await.ok();
    println!(
        "audit verify: {} chain(s), {} entries checked, {} broken",
        summary.chains, summary.entries, summary.broken
    );
    if summary.broken > 0 {
        anyhow::bail!("{} audit chain(s) broken", summary.broken);
    }
    Ok(())
}
