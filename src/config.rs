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
    /// Database connections that small reads share, sending their queries down them together;
    /// 0: every read takes a pooled connection.
    #[arg(
        long,
        env = "ORDERS_DB_SHARED_CONNECTIONS",
        global = true,
        default_value_t = crate::app::DEFAULT_SHARED_CONNECTIONS
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
    /// The most requests worked on at once; past it, 503 OVERLOADED at once rather than a queue.
    /// /healthz, /readyz and /metrics are not counted.
    #[arg(
        long,
        env = "ORDERS_MAX_IN_FLIGHT",
        global = true,
        default_value_t = crate::app::DEFAULT_MAX_IN_FLIGHT
    )]
    pub max_in_flight: usize,
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

    /// The connection settings, and how to secure the connection. `sslmode` and `sslrootcert`
    /// are taken out and read here, with libpq's meanings (see [`crate::storage::tls`]), since
    /// tokio-postgres knows only part of the first and none of the second; the rest is
    /// tokio-postgres's to read. Errors never quote the string, which may hold a password.
    pub fn parse(&self) -> Result<(tokio_postgres::Config, TlsSettings), DatabaseUrlError> {
        let (rest, tls_options) = take_tls_options(&self.0);
        let mut tls = TlsSettings::default();
        for (key, value) in tls_options {
            match key {
                TlsKey::SslMode => {
                    tls.mode = value
                        .parse()
                        .map_err(|()| DatabaseUrlError::SslMode(value))?;
                }
                TlsKey::SslRootCert => tls.root_cert = Some(PathBuf::from(value)),
            }
        }
        let mut config: tokio_postgres::Config = rest.parse().map_err(DatabaseUrlError::Invalid)?;
        // PostgreSQL has no TLS on Unix sockets, and libpq ignores sslmode for them. A
        // connection string of only `hostaddr`s names no host at all, and goes over TCP.
        let only_sockets = config.get_hostaddrs().is_empty()
            && !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        if tls.mode == SslMode::VerifyFull && config.get_hosts().is_empty() {
            return Err(DatabaseUrlError::NoHostToVerify);
        }
        config.ssl_mode(match tls.mode {
            _ if only_sockets => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if only_sockets {
            tls.mode = SslMode::Disable;
        }
        Ok((config, tls))
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

/// Why `DATABASE_URL` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error(
        "sslmode {0:?} is not one of disable, prefer, require, verify-ca, verify-full \
         (libpq's allow, which tries without TLS first, is not supported)"
    )]
    SslMode(String),
    #[error(
        "sslmode=verify-full checks that the database's certificate names the host, so \
         DATABASE_URL needs a host name, not only hostaddr"
    )]
    NoHostToVerify,
    #[error(transparent)]
    Invalid(tokio_postgres::Error),
}

/// `sslmode` in `DATABASE_URL`, as libpq reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it (libpq's default, and ours).
    #[default]
    Prefer,
    /// Always TLS; the certificate is checked only against an `sslrootcert` given.
    Require,
    /// Always TLS, the certificate signed by a root in `sslrootcert`.
    VerifyCa,
    /// Like `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&str, Self); 5] = [
        ("disable", Self::Disable),
        ("prefer", Self::Prefer),
        ("require", Self::Require),
        ("verify-ca", Self::VerifyCa),
        ("verify-full", Self::VerifyFull),
    ];
}

impl std::str::FromStr for SslMode {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, mode)| *mode)
            .ok_or(())
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, _) = Self::NAMES
            .iter()
            .find(|(_, mode)| mode == self)
            .expect("every mode is named");
        f.write_str(name)
    }
}

/// How the connection to an external database is secured: `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// A PEM file of the root certificates the server's must be signed by.
    pub root_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsKey {
    SslMode,
    SslRootCert,
}

impl TlsKey {
    fn of(key: &str) -> Option<Self> {
        match key {
            "sslmode" => Some(Self::SslMode),
            "sslrootcert" => Some(Self::SslRootCert),
            _ => None,
        }
    }
}

/// Splits a connection string, URL or key=value, into the rest and its TLS options in the
/// order given (so the last of a repeated one wins, as in libpq). A string that cannot be
/// read is returned whole, for tokio-postgres to report what is wrong with it.
fn take_tls_options(text: &str) -> (String, Vec<(TlsKey, String)>) {
    let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    let taken = if is_url {
        take_from_url(text)
    } else {
        take_from_key_values(text)
    };
    taken.unwrap_or_else(|| (text.to_owned(), Vec::new()))
}

fn take_from_url(url: &str) -> Option<(String, Vec<(TlsKey, String)>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Some((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for parameter in query.split('&') {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .ok()
        };
        match TlsKey::of(&decode(key)?) {
            Some(tls_key) => taken.push((tls_key, decode(value)?)),
            None => kept.push(parameter),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Some((rest, taken))
}

/// The key=value form: `key = value` pairs apart by white space, a value either bare or in
/// single quotes, with `\` escaping the next character in both.
fn take_from_key_values(text: &str) -> Option<(String, Vec<(TlsKey, String)>)> {
    let bytes = text.as_bytes();
    let mut at = 0;
    let skip_space = |at: &mut usize| {
        while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    loop {
        skip_space(&mut at);
        if at == bytes.len() {
            break;
        }
        let start = at;
        while at < bytes.len() && !bytes[at].is_ascii_whitespace() && bytes[at] != b'=' {
            at += 1;
        }
        let key = &text[start..at];
        skip_space(&mut at);
        if bytes.get(at) != Some(&b'=') {
            return None;
        }
        at += 1;
        skip_space(&mut at);
        let mut value = Vec::new();
        let quoted = bytes.get(at) == Some(&b'\'');
        if quoted {
            at += 1;
        }
        loop {
            match bytes.get(at) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    at += 1;
                    break;
                }
                Some(byte) if !quoted && byte.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    value.push(*bytes.get(at + 1)?);
                    at += 2;
                }
                Some(byte) => {
                    value.push(*byte);
                    at += 1;
                }
            }
        }
        match TlsKey::of(key) {
            Some(tls_key) => taken.push((tls_key, String::from_utf8(value).ok()?)),
            None => kept.push(&text[start..at]),
        }
    }
    Some((kept.join(" "), taken))
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
    pub db_shared_connections: usize,
    /// What each serving session of the database may take.
    pub session_limits: crate::storage::SessionLimits,
    pub idempotency_retention: Duration,
    pub event_retention: Duration,
    /// The rate limit of keys without one of their own; none: they are not limited.
    pub rate_limit: Option<RateLimit>,
    pub max_in_flight: usize,
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
            db_shared_connections: args.db_shared_connections,
            // PostgreSQL reads 0 as "no limit", which these settings exist to prevent; a
            // millisecond is the least it can state.
            session_limits: crate::storage::SessionLimits {
                statement_timeout: args.db_statement_timeout.max(Duration::from_millis(1)),
                lock_timeout: args.db_lock_timeout.max(Duration::from_millis(1)),
            },
            // Zero would make every replay impossible; a second is the least that means anything.
            idempotency_retention: args.idempotency_retention.max(Duration::from_secs(1)),
            // Likewise: a consumer needs at least a moment to read what it was told of.
            event_retention: args.event_retention.max(Duration::from_secs(1)),
            rate_limit: args
                .rate_limit
                .map(|per_second| RateLimit::new(per_second, args.rate_limit_burst)),
            // Zero would refuse everything but the probes.
            max_in_flight: args.max_in_flight.max(1),
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

#[cfg(test)]
mod tests {
    use tokio_postgres::config::{Host, SslMode as WireMode};

    use super::*;

    fn parse(text: &str) -> (tokio_postgres::Config, TlsSettings) {
        DatabaseUrl::new(text).parse().unwrap()
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
    fn a_url_gives_up_its_tls_options_and_keeps_the_rest() {
        let (config, tls) = parse(
            "postgres://app:s3cret@db.example:6543/orders?sslmode=verify-full\
             &application_name=orders&sslrootcert=%2Fetc%2Fssl%2Froot%20ca.pem",
        );
        assert_eq!(
            tls,
            TlsSettings {
                mode: SslMode::VerifyFull,
                root_cert: Some(PathBuf::from("/etc/ssl/root ca.pem")),
            }
        );
        assert_eq!(config.get_ssl_mode(), WireMode::Require);
        assert_eq!(config.get_hosts(), [Host::Tcp("db.example".to_owned())]);
        assert_eq!(config.get_ports(), [6543]);
        assert_eq!(config.get_dbname(), Some("orders"));
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(config.get_application_name(), Some("orders"));
    }

    #[test]
    fn a_key_value_string_gives_up_its_tls_options_quoted_or_not() {
        let (config, tls) = parse(
            "host=db.example sslrootcert = '/etc/it\\'s root.pem' user=app sslmode=verify-ca \
             password='a b' dbname=orders",
        );
        assert_eq!(
            tls,
            TlsSettings {
                mode: SslMode::VerifyCa,
                root_cert: Some(PathBuf::from("/etc/it's root.pem")),
            }
        );
        assert_eq!(config.get_ssl_mode(), WireMode::Require);
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"a b"[..]));
        assert_eq!(config.get_dbname(), Some("orders"));
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_by_libpq_and_the_last_sslmode_wins() {
        let (config, tls) = parse("postgres://app@db.example/orders");
        assert_eq!(tls, TlsSettings::default());
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(config.get_ssl_mode(), WireMode::Prefer);

        let (config, tls) = parse("host=db.example sslmode=require sslmode=disable");
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(config.get_ssl_mode(), WireMode::Disable);
    }

    #[test]
    fn a_connection_string_of_only_hostaddrs_goes_over_tcp_with_the_tls_it_asks_for() {
        let (config, tls) = parse("hostaddr=10.0.0.5 sslmode=require dbname=orders");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(config.get_ssl_mode(), WireMode::Require);
        let error = DatabaseUrl::new("hostaddr=10.0.0.5 sslmode=verify-full sslrootcert=/x")
            .parse()
            .unwrap_err();
        assert!(matches!(error, DatabaseUrlError::NoHostToVerify), "{error}");
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
    fn a_unix_socket_never_uses_tls_whatever_sslmode_says() {
        let (config, tls) = parse("host=/var/run/postgresql sslmode=require dbname=orders");
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(config.get_ssl_mode(), WireMode::Disable);
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name_without_the_rest_of_the_string() {
        for text in [
            "postgres://app:s3cret@db.example/orders?sslmode=allow",
            "host=db.example password=s3cret sslmode=allow",
        ] {
            let error = DatabaseUrl::new(text).parse().unwrap_err();
            let message = crate::telemetry::error_chain(&error);
            assert!(
                message.contains("sslmode \"allow\" is not one of"),
                "{message}"
            );
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

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
