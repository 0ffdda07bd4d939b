//! `engage`: the all-in-one binary. `engage serve` runs every route on the internal port and the
//! public allowlist on the external port; the other subcommands administer a deployment
//! directly against PostgreSQL (migrations, tenants, API keys, services, the demo tenant).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use functions::admin::{
    api_keys::create_key,
    services::put_service,
    tenants::{NewTenant, create_tenant},
};
use serde_json::{Value, json};
use shared::{
    ApiError, Config,
    http::{AppState, serve::millis, serve_listener, shutdown_signal},
};

#[derive(Parser)]
#[command(
    name = "engage",
    version,
    about = "Engage callback engagement service (all-in-one)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route on INTERNAL_PORT and the public API on EXTERNAL_PORT.
    Serve {
        /// Also run the dispatcher in this process.
        #[arg(long)]
        with_worker: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Tenants (contact centers).
    Tenant {
        #[command(subcommand)]
        command: TenantCmd,
    },
    /// API keys.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCmd,
    },
    /// Callback services.
    Service {
        #[command(subcommand)]
        command: ServiceCmd,
    },
    /// Provision the demo tenant, two services and a fresh API key; prints them as JSON.
    Demo {
        /// Tenant id of the demo.
        #[arg(long, default_value = "demo")]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant.
    Create {
        /// Contact-center id (ccid): 1–64 of `A-Za-z0-9_.-`, starting with a letter or digit.
        #[arg(long)]
        id: String,
        /// Human-readable name, for admins only.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ApikeyCmd {
    /// Create an API key (printed once).
    Create {
        /// Contact-center id of an existing tenant.
        #[arg(long)]
        tenant: String,
        /// Free-text note on what the key is for (shown when keys are listed).
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Create or replace a service from a JSON settings file.
    Put {
        /// Contact-center id of an existing tenant.
        #[arg(long)]
        tenant: String,
        /// Service name (defaults to the file's "name").
        #[arg(long)]
        name: Option<String>,
        /// JSON file with the settings (columns: docs/decisions.md#service-settings).
        #[arg(long)]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers log to stdout; admin subcommands keep stdout for their JSON output.
    let target = match cli.command {
        Command::Serve { .. } => shared::telemetry::Target::Stdout,
        _ => shared::telemetry::Target::Stderr,
    };
    shared::process::main_with("engage", target, |cfg| run(cli.command, cfg))
}

fn api(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!(e.public_message())
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    if matches!(command, Command::Serve { .. }) {
        // The internal port serves the voice-platform events route: fail closed.
        cfg.require_ors_events_token()?;
    }
    let schema = cfg.db.db_schema.clone();
    let state = AppState::new(cfg)?;
    shared::db::migrate(&state.db, schema.as_deref()).await?;
    match command {
        Command::Migrate => Ok(()),
        Command::Serve { with_worker } => serve(state, with_worker).await,
        Command::Tenant {
            command: TenantCmd::Create { id, name },
        } => print(
            &create_tenant(&state, &NewTenant { id, name })
                .await
                .map_err(api)?,
        ),
        Command::Apikey {
            command: ApikeyCmd::Create { tenant, label },
        } => print(&create_key(&state, &tenant, &label).await.map_err(api)?),
        Command::Service {
            command: ServiceCmd::Put { tenant, name, file },
        } => {
            let body: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
            let name = name
                .or_else(|| body.get("name").and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| {
                    anyhow::anyhow!("--name is required when the file has no \"name\"")
                })?;
            print(
                &put_service(&state, &tenant, &name, body)
                    .await
                    .map_err(api)?
                    .0,
            )
        }
        Command::Demo { tenant } => demo(&state, &tenant).await,
    }
}

async fn serve(state: AppState, with_worker: bool) -> anyhow::Result<()> {
    shared::metrics::install();
    functions::ops::spawn_health_refresh(state.clone());
    let http = state.cfg.http.clone();
    let grace = millis(http.shutdown_grace_ms);
    let internal = tokio::net::TcpListener::bind(("0.0.0.0", http.internal_port)).await?;
    let external = tokio::net::TcpListener::bind(("0.0.0.0", http.external_port)).await?;
    tracing::info!(
        internal = http.internal_port,
        external = http.external_port,
        "listening"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let a = tokio::spawn(serve_listener(
        internal,
        functions::internal_app(state.clone()),
        signal(stop_rx.clone()),
        grace,
    ));
    let b = tokio::spawn(serve_listener(
        external,
        functions::external_app(state.clone()),
        signal(stop_rx),
        grace,
    ));
    // The in-process dispatcher shares the pools and stops on the same signal.
    let worker_stop = tokio_util::sync::CancellationToken::new();
    let dispatcher = with_worker.then(|| {
        let w = worker::Worker::from_parts(
            state.cfg.clone(),
            state.db.clone(),
            state.redis.clone(),
            state.voice.clone(),
            state.keys.clone(),
        );
        tracing::info!("dispatcher running in-process");
        let stop = worker_stop.clone();
        tokio::spawn(async move { w.run(stop).await })
    });
    shutdown_signal().await;
    worker_stop.cancel();
    let _ = stop_tx.send(true);
    let (ra, rb) = tokio::join!(a, b);
    if let Some(d) = dispatcher {
        d.await??;
    }
    ra??;
    rb??;
    Ok(())
}

/// Idempotent demo provisioning: tenant and services are upserted; a new key each run.
async fn demo(state: &AppState, tenant: &str) -> anyhow::Result<()> {
    match create_tenant(
        state,
        &NewTenant {
            id: tenant.into(),
            name: "Demo contact center".into(),
        },
    )
    .await
    {
        Ok(_) | Err(ApiError::Conflict(_)) => {}
        Err(e) => return Err(api(e)),
    }
    put_service(
        state,
        tenant,
        "demo-immediate",
        json!({"scheduled_enabled": false, "route_point": "5000", "reject_out_of_hours": false}),
    )
    .await
    .map_err(api)?;
    put_service(
        state,
        tenant,
        "demo-scheduled",
        json!({"immediate_enabled": false, "route_point": "5001", "reject_out_of_hours": false,
               "slot_minutes": 15, "slot_capacity": 10}),
    )
    .await
    .map_err(api)?;
    let key = create_key(state, tenant, "demo").await.map_err(api)?;
    print(
        &json!({"tenant": tenant, "apiKey": key.key, "services": ["demo-immediate", "demo-scheduled"]}),
    )
}
