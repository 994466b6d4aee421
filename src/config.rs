//! Settings, read once at start-up from flags or the environment (see `.env.example`).

use std::{fmt, net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

/// The orders service: an HTTP API for orders and the services they book.
#[derive(Debug, Parser)]
#[command(name = "orders", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Migrate the database and serve the API (the default).
    Serve,
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Load the sample data (idempotent: running it twice changes nothing), then exit.
    Seed,
    /// Print the OpenAPI spec as YAML; `orders openapi > openapi.yaml` regenerates the committed one.
    Openapi,
}

#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// PostgreSQL to use, as a URL or key=value string. Unset: run a private cluster in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Address to listen on.
    #[arg(
        long,
        env = "ORDERS_BIND",
        global = true,
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,
    /// Folder for the private PostgreSQL cluster used when DATABASE_URL is unset.
    #[arg(long, env = "ORDERS_DATA_DIR", global = true, default_value = ".data")]
    pub data_dir: PathBuf,
    /// Most database connections to hold open.
    #[arg(long, env = "ORDERS_DB_POOL_SIZE", global = true, default_value_t = 8)]
    pub db_pool_size: usize,
}

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DatabaseSettings {
    /// A server someone else runs.
    External(DatabaseUrl),
    /// A private cluster in this folder, started and stopped with the process.
    Embedded { data_dir: PathBuf },
}

/// A connection string. Its `Debug` hides it, since it may hold a password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn parse(&self) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        self.0.parse()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

/// Everything the application needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database: DatabaseSettings,
    pub db_pool_size: usize,
}

impl From<SettingsArgs> for Settings {
    fn from(args: SettingsArgs) -> Self {
        let database = match args.database_url {
            Some(url) if !url.trim().is_empty() => {
                DatabaseSettings::External(DatabaseUrl::new(url))
            }
            _ => DatabaseSettings::Embedded {
                data_dir: args.data_dir.join("postgres"),
            },
        };
        Self {
            bind: args.bind,
            database,
            db_pool_size: args.db_pool_size.max(1),
        }
    }
}
