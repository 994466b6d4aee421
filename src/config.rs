//! Settings, read once at start-up from flags or the environment (see `.env.example`).

use std::{fmt, net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::domain::{KeyName, MAX_RATE_PER_SECOND, RateLimit, Scope};

/// Reads a request rate or burst: a whole number from 1 to [`MAX_RATE_PER_SECOND`].
fn parse_rate(text: &str) -> Result<NonZeroU32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|rate| (1..=MAX_RATE_PER_SECOND).contains(rate))
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("must be a whole number from 1 to {MAX_RATE_PER_SECOND}"))
}

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
        /// The key's own rate limit, in requests a second on each instance; it replaces the
        /// instance's --rate-limit for this key. Unset: the instance's limit applies, if any.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<NonZeroU32>,
        /// How many requests the key may send at once after a quiet spell (the bucket's size).
        /// Unset: one second's worth, as --rate.
        #[arg(long, value_parser = parse_rate, requires = "rate")]
        burst: Option<NonZeroU32>,
    },
    /// List the keys: name, scopes, created, last used (to the minute), revoked, and the key's
    /// own rate limit (`-`: the instance's applies). Never secrets.
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
    /// The rate limit of every API key that has none of its own, in requests a second on each
    /// instance (429 RATE_LIMITED past it). Unset: such keys are not limited.
    #[arg(long, env = "ORDERS_RATE_LIMIT", global = true, value_parser = parse_rate)]
    pub rate_limit: Option<NonZeroU32>,
    /// How many requests such a key may send at once after a quiet spell. Unset: one second's
    /// worth, as --rate-limit.
    #[arg(long, env = "ORDERS_RATE_LIMIT_BURST", global = true, value_parser = parse_rate)]
    pub rate_limit_burst: Option<NonZeroU32>,
    /// The most requests worked on at once; past it, 503 OVERLOADED at once rather than a queue.
    /// /healthz, /readyz and /metrics are not counted.
    #[arg(
        long,
        env = "ORDERS_MAX_IN_FLIGHT",
        global = true,
        default_value_t = crate::app::DEFAULT_MAX_IN_FLIGHT
    )]
    pub max_in_flight: usize,
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
    /// The rate limit of keys without one of their own; none: they are not limited.
    pub rate_limit: Option<RateLimit>,
    pub max_in_flight: usize,
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
            rate_limit: args
                .rate_limit
                .map(|per_second| RateLimit::new(per_second, args.rate_limit_burst)),
            // Zero would refuse everything but the probes.
            max_in_flight: args.max_in_flight.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, clap::Error> {
        let args = std::iter::once("orders").chain(args.iter().copied());
        Cli::try_parse_from(args).map(|cli| Settings::from(cli.settings))
    }

    #[test]
    fn no_rate_limit_unless_configured_and_a_burst_of_one_second_s_worth() {
        // Unless the environment running the tests configures one.
        if std::env::var_os("ORDERS_RATE_LIMIT").is_none() {
            assert_eq!(settings(&[]).unwrap().rate_limit, None);
        }
        let five = NonZeroU32::new(5).unwrap();
        assert_eq!(
            settings(&["--rate-limit", "5"]).unwrap().rate_limit,
            Some(RateLimit::new(five, None))
        );
        let limited = settings(&["--rate-limit", "5", "--rate-limit-burst", "9"]).unwrap();
        assert_eq!(
            limited.rate_limit,
            Some(RateLimit::new(five, NonZeroU32::new(9)))
        );
        for refused in ["0", "-1", "1000001", "x"] {
            assert!(settings(&["--rate-limit", refused]).is_err(), "{refused}");
        }
    }

    #[test]
    fn requests_in_flight_are_capped_at_256_unless_configured() {
        if std::env::var_os("ORDERS_MAX_IN_FLIGHT").is_none() {
            assert_eq!(settings(&[]).unwrap().max_in_flight, 256);
        }
        assert_eq!(
            settings(&["--max-in-flight", "2"]).unwrap().max_in_flight,
            2
        );
        assert_eq!(
            settings(&["--max-in-flight", "0"]).unwrap().max_in_flight,
            1
        );
    }
}
