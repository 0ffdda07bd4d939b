//! The command line of `engage` and the admin subcommands, which work directly on PostgreSQL
//! through the same store functions as the admin API and print their result as JSON.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use functions::admin::{
    api_keys::create_key,
    services::put_service,
    tenants::{NewTenant, create_tenant},
};
use functions::ui::users::{NewUser, create_user};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use shared::{ApiError, Config, http::AppState};

#[derive(Parser)]
#[command(
    name = "engage",
    version,
    about = "Engage callback engagement service (all-in-one)"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Per-tenant third-party credentials (docs/credentials.md).
    Credentials {
        #[command(subcommand)]
        command: CredentialsCmd,
    },
    /// Admin-UI users (docs/admin-ui.md).
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
    /// Provision the demo tenant, two services and a fresh API key; prints them as JSON.
    Demo {
        /// Tenant id of the demo.
        #[arg(long, default_value = "demo")]
        tenant: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum TenantCmd {
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
pub(crate) enum ApikeyCmd {
    /// Create an API key (printed once), or import an existing one (e.g. a GES key built into
    /// apps) from a file or stdin: never from the command line, where it would land in the
    /// shell history and in `ps`.
    Create {
        /// Contact-center id of an existing tenant.
        #[arg(long)]
        tenant: String,
        /// Free-text note on what the key is for (shown when keys are listed).
        #[arg(long, default_value = "")]
        label: String,
        /// Import the key held in this file (surrounding whitespace and newline ignored).
        #[arg(long, value_name = "PATH", conflicts_with = "key_stdin")]
        key_file: Option<PathBuf>,
        /// Import the key read from standard input (surrounding whitespace ignored).
        #[arg(long)]
        key_stdin: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum CredentialsCmd {
    /// Re-encrypt every stored record under CREDENTIALS_KEY (records under a key of
    /// CREDENTIALS_KEYS_RETIRED); idempotent. Prints {keyId, rotated, failed}; exits non-zero
    /// when a record opens under no configured key (docs/credentials.md#rotation).
    Rotate,
}

#[derive(Subcommand)]
pub(crate) enum UserCmd {
    /// Create a user (or replace its password and role); the password is read from a file or
    /// standard input, never from the command line.
    Create {
        /// Contact-center id of an existing tenant.
        #[arg(long)]
        tenant: String,
        /// Login name.
        #[arg(long)]
        username: String,
        /// Administrator, Supervisor, Monitor or Developer.
        #[arg(long)]
        role: String,
        /// Read the password from this file (surrounding whitespace and newline ignored).
        #[arg(long, value_name = "PATH", conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
        /// Read the password from standard input (surrounding whitespace ignored).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ServiceCmd {
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

/// Migrates, then runs one subcommand.
pub(crate) async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    if matches!(command, Command::Serve { .. }) {
        // The internal port serves the voice-platform events route: fail closed.
        cfg.require_ors_events_token()?;
    }
    let schema = cfg.db.schema.clone();
    let state = AppState::new(cfg)?;
    shared::db::migrate(&state.db, schema.as_deref()).await?;
    match command {
        Command::Migrate => Ok(()),
        Command::Serve { with_worker } => crate::serving::serve(state, with_worker).await,
        Command::Tenant {
            command: TenantCmd::Create { id, name },
        } => print(
            &create_tenant(&state, &NewTenant { id, name })
                .await
                .map_err(api)?,
        ),
        Command::Apikey {
            command:
                ApikeyCmd::Create {
                    tenant,
                    label,
                    key_file,
                    key_stdin,
                },
        } => {
            let existing = imported_key(key_file.as_deref(), key_stdin)?;
            let existing = existing.as_ref().map(|k| k.expose_secret());
            print(
                &create_key(&state, &tenant, &label, existing)
                    .await
                    .map_err(api)?,
            )
        }
        Command::Service {
            command: ServiceCmd::Put { tenant, name, file },
        } => put_service_file(&state, &tenant, name, &file).await,
        Command::Credentials {
            command: CredentialsCmd::Rotate,
        } => rotate(&state).await,
        Command::User {
            command:
                UserCmd::Create {
                    tenant,
                    username,
                    role,
                    password_file,
                    password_stdin,
                },
        } => {
            let password = imported_key(password_file.as_deref(), password_stdin)?
                .ok_or_else(|| anyhow::anyhow!("give --password-file or --password-stdin"))?;
            let user = NewUser {
                username,
                password,
                role,
            };
            print(&create_user(&state, &tenant, user).await.map_err(api)?)
        }
        Command::Demo { tenant } => crate::demo::provision(&state, &tenant).await,
    }
}

/// `engage credentials rotate`: re-seals every record under the current key.
async fn rotate(state: &AppState) -> anyhow::Result<()> {
    let client = state.db.get().await?;
    // With the cause (the operator's own terminal): a missing key or a database failure.
    let report = state
        .vault
        .rotate(&client)
        .await
        .map_err(|e| anyhow::anyhow!("credentials rotate: {e:?}"))?;
    print(&report)?;
    match report.failed.len() {
        0 => Ok(()),
        n => anyhow::bail!(
            "{n} credential records open under no configured key and were left as they are"
        ),
    }
}

/// The secret read from `--key-file`/`--password-file` or standard input (none: not given).
fn imported_key(
    file: Option<&std::path::Path>,
    stdin: bool,
) -> anyhow::Result<Option<SecretString>> {
    let text = match (file, stdin) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read it: {e}", path.display()))?,
        (None, true) => std::io::read_to_string(std::io::stdin())
            .map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?,
        (None, false) => return Ok(None),
    };
    Ok(Some(SecretString::from(text.trim().to_string())))
}

/// `engage service put`: the settings file, named by `--name` or its own `"name"`.
async fn put_service_file(
    state: &AppState,
    tenant: &str,
    name: Option<String>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let body: Value = serde_json::from_slice(&std::fs::read(file)?)?;
    let name = name
        .or_else(|| body.get("name").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("--name is required when the file has no \"name\""))?;
    print(
        &put_service(state, tenant, &name, body)
            .await
            .map_err(api)?
            .0,
    )
}

/// An API error as a CLI error: its public message only (causes are logged where they occur).
pub(crate) fn api(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!(e.public_message())
}

/// Prints a result as pretty JSON on stdout.
pub(crate) fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
