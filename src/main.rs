//! The `exchange-connections` binary: `serve` (the default), `worker`,
//! `migrate`, `audit verify`, `rekey`, `schema` and `keygen`.

use clap::{Args, Parser, Subcommand};
use exchange_connections::config::Settings;
use exchange_connections::service::rekey::{self, Rekey, RekeyOptions};
use exchange_connections::startup::{self, Application};
use exchange_connections::{crypto::KeyRing, graphql, telemetry, worker};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Re-encrypt every stored secret under the primary (first) key of
    /// ENCRYPTION_KEYS, in batches, while serve keeps running. Safe to
    /// interrupt and run again. Exits non-zero if a secret could not be opened.
    Rekey(Box<RekeyArgs>),
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

#[derive(Args)]
struct RekeyArgs {
    /// Only count what would be re-encrypted (every secret is still opened); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rows per batch; each batch is one transaction.
    #[arg(long, default_value_t = rekey::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,
    /// Batches in flight at once, each on its own database connection (1: one after another).
    #[arg(long, default_value_t = rekey::DEFAULT_PARALLEL as u64, value_parser = clap::value_parser!(u64).range(1..=16))]
    jobs: u64,
    #[command(flatten)]
    settings: Settings,
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
        Some(Command::Rekey(args)) => run(async move { rekey(*args).await }),
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

/// `rekey`: runs batches until done (or a shutdown signal, which rolls back
/// only the batch in flight), printing progress to stdout.
async fn rekey(args: RekeyArgs) -> anyhow::Result<()> {
    telemetry::init_logging(&args.settings.log_format);
    let keyring = Arc::new(KeyRing::parse(
        args.settings.encryption_keys()?.expose(),
        "ENCRYPTION_KEYS",
    )?);
    let db = startup::connect_database(&args.settings.validate_database_url()?).await?;
    startup::prepare_schema(&db, false).await?;
    exchange_connections::database_role::check_sees_all(&db).await?;
    let options = RekeyOptions {
        batch_size: args.batch_size,
        parallel: args.jobs as usize,
        dry_run: args.dry_run,
    };
    let mut run = Rekey::start(db.clone(), keyring.clone(), options).await?;
    let primary = keyring.primary_key_id().to_owned();
    let verb = if options.dry_run {
        "would re-encrypt"
    } else {
        "re-encrypted"
    };
    let mode = if options.dry_run {
        "rekey (dry run, nothing is written)"
    } else {
        "rekey"
    };
    println!(
        "{mode}: primary key {primary}; {} rows hold secrets; stored secrets by key version: {}",
        run.total_rows(),
        by_key_line(&run.by_key(), &primary)
    );
    let started = std::time::Instant::now();
    let shutdown = startup::shutdown_signal();
    tokio::pin!(shutdown);
    let mut batch = 0u64;
    loop {
        let report = tokio::select! {
            biased;
            () = &mut shutdown => {
                anyhow::bail!(
                    "interrupted after {batch} batches (the batch in flight was rolled back); run rekey again to finish"
                );
            }
            report = run.next_batch() => report?,
        };
        let Some(report) = report else { break };
        batch += 1;
        for row in &report.unreadable {
            println!("unreadable, skipped: {row}");
        }
        let totals = run.totals();
        let remaining: BTreeMap<String, u64> = run
            .by_key()
            .into_iter()
            .filter(|(key, count)| *key != primary && *count > 0)
            .collect();
        println!(
            "batch {batch}: scanned {}/{} rows; {} {} secrets in {} rows; unreadable {}; remaining by key version: {}",
            totals.scanned,
            run.total_rows(),
            verb,
            totals.secrets_resealed,
            totals.rows_resealed,
            totals.unreadable,
            if remaining.is_empty() {
                "none".to_owned()
            } else {
                by_key_line(&remaining, &primary)
            },
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let totals = run.totals().clone();
    let by_key = if options.dry_run {
        run.by_key()
    } else {
        let mut counted =
            rekey::stored_secrets_by_key(&exchange_connections::service::tenancy::TenantDb::new(db.clone())).await?;
        for id in keyring.key_ids() {
            counted.entry(id.to_owned()).or_insert(0);
        }
        counted
    };
    println!(
        "{mode}: done in {elapsed:.1} s: scanned {} rows; {} {} secrets in {} rows ({:.0} secrets/s); \
         relabelled {} rows; unreadable {}",
        totals.scanned,
        verb,
        totals.secrets_resealed,
        totals.rows_resealed,
        totals.secrets_resealed as f64 / elapsed.max(1e-9),
        totals.rows_relabelled,
        totals.unreadable,
    );
    println!("stored secrets by key version: {}", by_key_line(&by_key, &primary));
    db.close().await.ok();
    if totals.unreadable > 0 {
        anyhow::bail!(
            "{} row(s) hold a secret that no configured key opens for that row; they were skipped (ids above). \
             If a key is missing from ENCRYPTION_KEYS, add it back (after the primary) and run rekey again.",
            totals.unreadable
        );
    }
    Ok(())
}

/// `k1 (primary) 10, k0 3` for a per-key-version count.
fn by_key_line(by_key: &BTreeMap<String, u64>, primary: &str) -> String {
    by_key
        .iter()
        .map(|(key, count)| {
            if key == primary {
                format!("{key} (primary) {count}")
            } else {
                format!("{key} {count}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
