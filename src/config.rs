//! Settings, read once at start-up from flags or the environment (see `.env.example`).

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::domain::{KeyName, Scope};

/// The orders service: an HTTP API for orders and the services they book.
#[derive(Debug, Parser)]
#[command(name = "orders", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Migrate the database and serve the API (the default).
    Serve,
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Load the sample data (idempotent: running it twice changes nothing), then exit.
    Seed,
    /// Print the OpenAPI spec as YAML; `orders openapi > openapi.yaml` regenerates the committed one.
    Openapi,
    /// Manage the API keys that callers authenticate with.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret, alone on the last line; it is never shown again.
    Create {
        /// The key's name, shown in logs and in `created_by`/`updated_by`: 1 to 63 of a-z, 0-9,
        /// '.', '_' and '-', starting with a letter or digit. Names are never reused.
        #[arg(long)]
        name: KeyName,
        /// A scope the key holds: orders:read, orders:write or services:write. Repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
    },
    /// List the keys: name, scopes, created, last used (to the minute) and revoked. Never secrets.
    List,
    /// Revoke a key: every instance refuses it within seconds. It stays listed, and its name taken.
    Revoke {
        /// The key's name.
        name: String,
    },
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
    /// How long one SQL statement may run before the database cancels it (503 DATABASE_TIMEOUT).
    #[arg(
        long,
        env = "ORDERS_DB_STATEMENT_TIMEOUT",
        global = true,
        default_value = "4s",
        value_parser = humantime::parse_duration
    )]
    pub db_statement_timeout: Duration,
    /// How long one SQL statement may wait for a lock before the database cancels it.
    #[arg(
        long,
        env = "ORDERS_DB_LOCK_TIMEOUT",
        global = true,
        default_value = "2s",
        value_parser = humantime::parse_duration
    )]
    pub db_lock_timeout: Duration,
    /// How long the first answer to a create with an Idempotency-Key is kept (e.g. 24h, 90m).
    #[arg(
        long,
        env = "ORDERS_IDEMPOTENCY_RETENTION",
        global = true,
        default_value = "24h",
        value_parser = humantime::parse_duration
    )]
    pub idempotency_retention: Duration,
    /// How long a client may take to send a request's head (line and headers), from its first
    /// byte (on a new connection, from connecting); then the connection is closed.
    #[arg(
        long,
        env = "ORDERS_HEADER_READ_TIMEOUT",
        global = true,
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request, after its last answer.
    #[arg(
        long,
        env = "ORDERS_IDLE_TIMEOUT",
        global = true,
        default_value = "60s",
        value_parser = humantime::parse_duration
    )]
    pub idle_timeout: Duration,
    /// How long a request may take, from the arrival of its head to the end of its answer
    /// (its body included), before its connection is closed.
    #[arg(
        long,
        env = "ORDERS_REQUEST_TIMEOUT",
        global = true,
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub request_timeout: Duration,
    /// Most client connections open at once; past it, the one waiting longest for a request is
    /// closed. Default: the open-file limit less the pool, 64 and a tenth of the limit.
    #[arg(long, env = "ORDERS_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// On SIGTERM, how long to keep serving while /readyz answers 503, before the listener closes.
    #[arg(
        long,
        env = "ORDERS_SHUTDOWN_DELAY",
        global = true,
        default_value = "0s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_delay: Duration,
    /// On SIGTERM, how long requests in progress may take to finish before they are cut off.
    #[arg(
        long,
        env = "ORDERS_SHUTDOWN_TIMEOUT",
        global = true,
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_timeout: Duration,
}

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DatabaseSettings {
    /// A server someone else runs.
    External(DatabaseUrl),
    /// A private cluster, started and stopped with the process, in `data_dir/postgres`; the
    /// `local` key's secret is kept in `data_dir` too.
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
    /// What each serving session of the database may take.
    pub session_limits: crate::storage::SessionLimits,
    pub idempotency_retention: Duration,
    /// How the server bounds connections and shutdown.
    pub serve: crate::server::ServeSettings,
}

impl From<SettingsArgs> for Settings {
    fn from(args: SettingsArgs) -> Self {
        let database = match args.database_url {
            Some(url) if !url.trim().is_empty() => {
                DatabaseSettings::External(DatabaseUrl::new(url))
            }
            _ => DatabaseSettings::Embedded {
                data_dir: args.data_dir,
            },
        };
        Self {
            bind: args.bind,
            database,
            db_pool_size: args.db_pool_size.max(1),
            // PostgreSQL reads 0 as "no limit", which these settings exist to prevent; a
            // millisecond is the least it can state.
            session_limits: crate::storage::SessionLimits {
                statement_timeout: args.db_statement_timeout.max(Duration::from_millis(1)),
                lock_timeout: args.db_lock_timeout.max(Duration::from_millis(1)),
            },
            // Zero would make every replay impossible; a second is the least that means anything.
            idempotency_retention: args.idempotency_retention.max(Duration::from_secs(1)),
            // Zero timeouts would close every connection before its first request.
            serve: crate::server::ServeSettings {
                timeouts: crate::server::Timeouts {
                    header_read: args.header_read_timeout.max(Duration::from_millis(1)),
                    idle: args.idle_timeout.max(Duration::from_millis(1)),
                    request: args.request_timeout.max(Duration::from_millis(1)),
                },
                max_connections: args.max_connections.map(|cap| cap.max(1)),
                shutdown_delay: args.shutdown_delay,
                shutdown_timeout: args.shutdown_timeout,
            },
        }
    }
}
