//! Settings, read once at start-up from flags or the environment (see `.env.example`), as
//! plain data with their defaults. Nothing here knows what the settings are used for:
//! start-up (`crate::startup`) turns them into pools, limits and state.

use std::{fmt, net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Args, CommandFactory, FromArgMatches, Parser};

/// How many database connections small reads share, unless configured otherwise: two keep
/// both of a small database server's cores busy with reads pipelined on them, and leave a
/// stalled one a partner.
pub const DEFAULT_SHARED_CONNECTIONS: usize = 2;

/// The most requests an instance works on at once, unless configured otherwise: enough for
/// bursts of many clients (each request is short), and few enough that their buffered bodies
/// (64 KiB at most each) take little memory.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Refusals of requests without a route or a key answered at once each second: far more than
/// any misconfigured client sends, a few percent of the instance's time.
pub const DEFAULT_ANONYMOUS_REFUSALS_PER_SECOND: u32 = 1_000;

/// The most requests that wait for a place among those in flight: enough for thousands of
/// clients at once, each holding at most its head and a 64 KiB body meanwhile.
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// The most change feed readers one instance holds waiting for events, unless configured
/// otherwise: a waiting reader costs the database nothing, but holds its client's connection
/// and its request's task and buffers for up to 30 s; a thousand of them are served well (a
/// test holds them on a pool of two connections) and bound the memory they take.
pub const DEFAULT_FEED_MAX_WAITING: usize = 1_000;

/// The most change feed readers of one API key held waiting at once on an instance, unless
/// configured otherwise: a consuming system needs a reader or a few per copy it keeps, and one
/// key past this cannot take every place of the instance's bound.
pub const DEFAULT_FEED_MAX_WAITING_PER_KEY: usize = 100;

/// How often each instance reloads the API keys: about how long a revoked key keeps working,
/// and a new one takes to start working. Not a flag: the keys' cache trusts what it loaded
/// for a few seconds only, so a much longer interval would lock callers out.
pub const DEFAULT_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// The most requests a second a rate limit may name: far more than one instance serves, and
/// small enough to be stored as a PostgreSQL `integer`.
pub const MAX_RATE_PER_SECOND: u32 = 1_000_000;

/// Reads a request rate or burst: a whole number from 1 to [`MAX_RATE_PER_SECOND`].
pub fn parse_rate(text: &str) -> Result<NonZeroU32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|rate| (1..=MAX_RATE_PER_SECOND).contains(rate))
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("must be a whole number from 1 to {MAX_RATE_PER_SECOND}"))
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
    /// Address to serve /metrics on, apart from the API (e.g. 127.0.0.1:9464). Unset: /metrics
    /// is served on the API's address.
    #[arg(long, env = "ORDERS_METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,
    /// Folder for the private PostgreSQL cluster used when DATABASE_URL is unset.
    #[arg(long, env = "ORDERS_DATA_DIR", global = true, default_value = ".data")]
    pub data_dir: PathBuf,
    /// Most database connections to hold open.
    #[arg(long, env = "ORDERS_DB_POOL_SIZE", global = true, default_value_t = 8)]
    pub db_pool_size: usize,
    /// Database connections that small reads share, sending their queries down them together;
    /// 0: every read takes a pooled connection.
    #[arg(
        long,
        env = "ORDERS_DB_SHARED_CONNECTIONS",
        global = true,
        default_value_t = DEFAULT_SHARED_CONNECTIONS
    )]
    pub db_shared_connections: usize,
    /// How long one SQL statement may run before the database cancels it (503 DATABASE_TIMEOUT).
    #[arg(
        long,
        env = "ORDERS_DB_STATEMENT_TIMEOUT",
        global = true,
        default_value = "4s",
        value_parser = parse_timeout
    )]
    pub db_statement_timeout: Duration,
    /// How long one SQL statement may wait for a lock before the database cancels it.
    #[arg(
        long,
        env = "ORDERS_DB_LOCK_TIMEOUT",
        global = true,
        default_value = "2s",
        value_parser = parse_timeout
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
    /// How long the change feed keeps events before they are purged (e.g. 7d, 36h); a cursor
    /// older than that is answered 410 CURSOR_EXPIRED.
    #[arg(
        long,
        env = "ORDERS_EVENT_RETENTION",
        global = true,
        default_value = "7d",
        value_parser = humantime::parse_duration
    )]
    pub event_retention: Duration,
    /// The rate limit of every API key that has none of its own, in requests a second on each
    /// instance (429 RATE_LIMITED past it). Unset: such keys are not limited.
    #[arg(long, env = "ORDERS_RATE_LIMIT", global = true, value_parser = parse_rate)]
    pub rate_limit: Option<NonZeroU32>,
    /// How many requests such a key may send at once after a quiet spell. Unset: one second's
    /// worth, as --rate-limit.
    #[arg(long, env = "ORDERS_RATE_LIMIT_BURST", global = true, value_parser = parse_rate)]
    pub rate_limit_burst: Option<NonZeroU32>,
    /// The most requests worked on at once; past it, a request waits for a place, in the order
    /// of arrival, up to --max-queue-wait. /healthz, /readyz and /metrics are not counted.
    #[arg(
        long,
        env = "ORDERS_MAX_IN_FLIGHT",
        global = true,
        default_value_t = DEFAULT_MAX_IN_FLIGHT
    )]
    pub max_in_flight: usize,
    /// How long a request may wait for a place among those in flight; past it, 503 OVERLOADED
    /// with Retry-After (never longer than --request-timeout).
    #[arg(
        long,
        env = "ORDERS_MAX_QUEUE_WAIT",
        global = true,
        default_value = "500ms",
        value_parser = parse_timeout
    )]
    pub max_queue_wait: Duration,
    /// The most requests waiting for a place at once, a bound on the memory they hold; past it,
    /// 503 OVERLOADED at once.
    #[arg(
        long,
        env = "ORDERS_MAX_QUEUED",
        global = true,
        default_value_t = DEFAULT_MAX_QUEUED
    )]
    pub max_queued: usize,
    /// Refusals of requests without a route or a valid key (404, 405, 401) answered at once each
    /// second; past it, each is answered after a second, holding nothing but its connection,
    /// so that a flood of them cannot take the instance's time from callers with keys.
    #[arg(
        long,
        env = "ORDERS_ANONYMOUS_REFUSALS_PER_SECOND",
        global = true,
        default_value_t = DEFAULT_ANONYMOUS_REFUSALS_PER_SECOND
    )]
    pub anonymous_refusals_per_second: u32,
    /// The most change feed readers waiting for events at once on this instance; past it, a
    /// read with a wait is answered at once, as with wait=0. 0: none waits.
    #[arg(
        long,
        env = "ORDERS_FEED_MAX_WAITING",
        global = true,
        default_value_t = DEFAULT_FEED_MAX_WAITING
    )]
    pub feed_max_waiting: usize,
    /// The most change feed readers of one API key waiting at once on this instance; past it,
    /// likewise answered at once.
    #[arg(
        long,
        env = "ORDERS_FEED_MAX_WAITING_PER_KEY",
        global = true,
        default_value_t = DEFAULT_FEED_MAX_WAITING_PER_KEY
    )]
    pub feed_max_waiting_per_key: usize,
    /// Threads that serve requests; unset: half the machine's cores, at least one (see
    /// `worker_threads`).
    #[arg(long, env = "ORDERS_WORKER_THREADS", global = true)]
    pub worker_threads: Option<usize>,
    /// How long a client may take to send a request's head (line and headers), from its first
    /// byte (on a new connection, from connecting); then the connection is closed.
    #[arg(
        long,
        env = "ORDERS_HEADER_READ_TIMEOUT",
        global = true,
        default_value = "10s",
        value_parser = parse_timeout
    )]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request, after its last answer.
    #[arg(
        long,
        env = "ORDERS_IDLE_TIMEOUT",
        global = true,
        default_value = "60s",
        value_parser = parse_timeout
    )]
    pub idle_timeout: Duration,
    /// How long a request may take, from the arrival of its head to the end of its answer
    /// (its body included), before its connection is closed.
    #[arg(
        long,
        env = "ORDERS_REQUEST_TIMEOUT",
        global = true,
        default_value = "45s",
        value_parser = parse_timeout
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
        value_parser = parse_timeout
    )]
    pub shutdown_delay: Duration,
    /// On SIGTERM, how long requests in progress may take to finish before they are cut off.
    #[arg(
        long,
        env = "ORDERS_SHUTDOWN_TIMEOUT",
        global = true,
        default_value = "10s",
        value_parser = parse_timeout
    )]
    pub shutdown_timeout: Duration,
    /// Whether `serve` brings the schema up to date before it serves. Off where a deploy step
    /// runs `orders migrate` first.
    #[arg(
        long,
        env = "ORDERS_MIGRATE_ON_START",
        global = true,
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub migrate_on_start: bool,
}

/// How many threads serve requests: `configured`, else half of the `cores` the process may use,
/// at least one. A request's work is mostly telling PostgreSQL what to do and writing out what
/// it answered, and with more than one thread nearly every answer of the database is taken by
/// one thread and handed to another to finish, which took more CPU than the work itself: on a
/// 2-core machine shared with the database, one thread served a read of one order with 53 us of
/// CPU where two took 65 us, and served more of them a second. The database needs a core for
/// each the service keeps busy; on a machine of its own, with the database elsewhere, set it to
/// the number of cores.
pub fn worker_threads(configured: Option<usize>, cores: usize) -> usize {
    configured.unwrap_or(cores / 2).max(1)
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

    /// The string itself, for storage to read (see `storage::connection_string`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The longest any timeout may be set to: a day is far beyond any sensible bound, well
/// inside what PostgreSQL takes for `statement_timeout` (`i32::MAX` ms, about 24 days), and
/// far from where adding it to a clock could overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A timeout as humantime writes it (`500ms`, `10s`, `2m`), at most [`MAX_TIMEOUT`].
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if timeout > MAX_TIMEOUT {
        return Err("must be at most 24h".to_owned());
    }
    Ok(timeout)
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

/// Everything the service needs to start, as plain data.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    /// Where `/metrics` is served apart from the API; none: on the API's address.
    pub metrics_bind: Option<SocketAddr>,
    pub database: DatabaseSettings,
    pub db_pool_size: usize,
    pub db_shared_connections: usize,
    /// How long the database lets one statement of a serving session run.
    pub db_statement_timeout: Duration,
    /// How long the database lets one statement of a serving session wait for a lock.
    pub db_lock_timeout: Duration,
    pub idempotency_retention: Duration,
    pub event_retention: Duration,
    /// The rate limit of keys without one of their own; none: they are not limited.
    pub rate_limit: Option<RateSetting>,
    pub max_in_flight: usize,
    /// How long a request waits for a place among those in flight before it is refused.
    pub max_queue_wait: Duration,
    /// The most requests waiting for a place at once.
    pub max_queued: usize,
    /// Refusals without a route or a key answered at once each second (0: all at once).
    pub anonymous_refusals_per_second: u32,
    /// The most change feed readers waiting at once on the instance, and of one key.
    pub feed_max_waiting: usize,
    pub feed_max_waiting_per_key: usize,
    /// Threads that serve requests; none: half the cores (see [`worker_threads`]).
    pub worker_threads: Option<usize>,
    pub connections: ConnectionSettings,
    /// Whether to bring the schema up to date before serving. Off where a deploy step
    /// migrates, or the database is known to be migrated (as every test's is).
    pub migrate: bool,
    /// How often the API keys are reloaded ([`DEFAULT_KEY_REFRESH_INTERVAL`]; tests shorten it).
    pub key_refresh_interval: Duration,
}

/// A rate limit as configured: requests a second, and the burst (none: one second's worth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting {
    pub per_second: NonZeroU32,
    pub burst: Option<NonZeroU32>,
}

/// How client connections are bounded, and how shutdown goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Most connections open at once; none: derived from the open-file limit.
    pub max_connections: Option<usize>,
    pub shutdown_delay: Duration,
    pub shutdown_timeout: Duration,
}

/// Every setting at its default, as `orders` with no flags and no environment has them.
impl Default for Settings {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: SettingsArgs,
        }
        // The defaults are the flags' own: parsed from no arguments, with no environment read.
        let command = Defaults::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["orders"])
            .expect("every setting has a default");
        let defaults = Defaults::from_arg_matches(&matches).expect("the defaults parse");
        Self::from(defaults.settings)
    }
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
        // PostgreSQL reads 0 as "no limit", which these settings exist to prevent; a
        // millisecond is the least it can state.
        let at_least_a_millisecond = |timeout: Duration| timeout.max(Duration::from_millis(1));
        Self {
            bind: args.bind,
            metrics_bind: args.metrics_bind,
            database,
            db_pool_size: args.db_pool_size.max(1),
            db_shared_connections: args.db_shared_connections,
            db_statement_timeout: at_least_a_millisecond(args.db_statement_timeout),
            db_lock_timeout: at_least_a_millisecond(args.db_lock_timeout),
            // Zero would make every replay impossible; a second is the least that means anything.
            idempotency_retention: args.idempotency_retention.max(Duration::from_secs(1)),
            // Likewise: a consumer needs at least a moment to read what it was told of.
            event_retention: args.event_retention.max(Duration::from_secs(1)),
            rate_limit: args.rate_limit.map(|per_second| RateSetting {
                per_second,
                burst: args.rate_limit_burst,
            }),
            // Zero would refuse everything but the probes.
            max_in_flight: args.max_in_flight.max(1),
            // A request waiting for a place past its own timeout would be cut off anyway.
            max_queue_wait: args.max_queue_wait.min(args.request_timeout),
            max_queued: args.max_queued,
            anonymous_refusals_per_second: args.anonymous_refusals_per_second,
            feed_max_waiting: args.feed_max_waiting,
            feed_max_waiting_per_key: args.feed_max_waiting_per_key,
            worker_threads: args.worker_threads,
            // Zero timeouts would close every connection before its first request.
            connections: ConnectionSettings {
                header_read_timeout: at_least_a_millisecond(args.header_read_timeout),
                idle_timeout: at_least_a_millisecond(args.idle_timeout),
                request_timeout: at_least_a_millisecond(args.request_timeout),
                max_connections: args.max_connections.map(|cap| cap.max(1)),
                shutdown_delay: args.shutdown_delay,
                shutdown_timeout: args.shutdown_timeout,
            },
            migrate: args.migrate_on_start,
            key_refresh_interval: DEFAULT_KEY_REFRESH_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: SettingsArgs,
    }

    fn settings(args: &[&str]) -> Result<Settings, clap::Error> {
        let args = std::iter::once("orders").chain(args.iter().copied());
        Flags::try_parse_from(args).map(|flags| Settings::from(flags.settings))
    }

    #[test]
    fn requests_are_served_by_half_the_cores_unless_told_otherwise() {
        assert_eq!(worker_threads(None, 2), 1);
        assert_eq!(worker_threads(None, 1), 1);
        assert_eq!(worker_threads(None, 16), 8);
        assert_eq!(worker_threads(Some(16), 2), 16);
        assert_eq!(worker_threads(Some(0), 2), 1);
    }

    #[test]
    fn timeouts_past_a_day_are_refused_before_they_can_overflow_a_clock() {
        for flag in [
            "--db-statement-timeout",
            "--db-lock-timeout",
            "--header-read-timeout",
            "--idle-timeout",
            "--request-timeout",
            "--shutdown-delay",
            "--shutdown-timeout",
        ] {
            assert!(settings(&[flag, "24h"]).is_ok(), "{flag}");
            assert!(settings(&[flag, "25h"]).is_err(), "{flag}");
            assert!(settings(&[flag, "1000000000years"]).is_err(), "{flag}");
        }
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
            Some(RateSetting {
                per_second: five,
                burst: None
            })
        );
        let limited = settings(&["--rate-limit", "5", "--rate-limit-burst", "9"]).unwrap();
        assert_eq!(
            limited.rate_limit,
            Some(RateSetting {
                per_second: five,
                burst: NonZeroU32::new(9)
            })
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
    #[test]
    fn the_defaults_are_the_flags_own_whatever_the_environment_says() {
        let defaults = Settings::default();
        assert_eq!(defaults.db_pool_size, 8);
        assert_eq!(defaults.db_shared_connections, DEFAULT_SHARED_CONNECTIONS);
        assert_eq!(defaults.db_statement_timeout, Duration::from_secs(4));
        assert_eq!(defaults.db_lock_timeout, Duration::from_secs(2));
        assert_eq!(defaults.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(defaults.max_queue_wait, Duration::from_millis(500));
        assert_eq!(defaults.max_queued, DEFAULT_MAX_QUEUED);
        assert_eq!(
            defaults.connections.request_timeout,
            Duration::from_secs(45)
        );
        assert_eq!(defaults.rate_limit, None);
        assert!(matches!(
            defaults.database,
            DatabaseSettings::Embedded { .. }
        ));
        assert!(defaults.migrate);
        assert!(!settings(&["--migrate-on-start", "false"]).unwrap().migrate);
        assert_eq!(defaults.metrics_bind, None);
        assert_eq!(defaults.feed_max_waiting, DEFAULT_FEED_MAX_WAITING);
        assert_eq!(
            defaults.feed_max_waiting_per_key,
            DEFAULT_FEED_MAX_WAITING_PER_KEY
        );
        assert_eq!(
            settings(&["--metrics-bind", "127.0.0.1:9464"])
                .unwrap()
                .metrics_bind,
            Some("127.0.0.1:9464".parse().unwrap())
        );
    }
}
