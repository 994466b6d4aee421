//! Storage: the SQL that reads and writes orders and services, behind a connection pool.
//!
//! Every query is a prepared statement cached per connection (`prepare_cached`), and rows are
//! read by column name. Rules that must hold under concurrency (the 3-hour rule, unique names,
//! existing services) are constraints in the schema; each statement that can violate one
//! translates the violation where its meaning is known, into a [`StoreError`] the layers above
//! can act on. It knows nothing of HTTP.

pub mod api_keys;
pub mod connection_string;
pub mod events;
pub mod free_slots;
pub mod idempotency;
pub mod migrations;
pub mod orders;
pub mod seed;
pub mod services;
pub mod shared_connections;
mod shared_sql;
pub mod tls;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, error::SqlState, types::ToSql};

use crate::domain::{OrderId, PoolStatus, ServiceId};

/// How long the database lets one statement of a serving session run, and wait for a lock,
/// before it cancels the statement: so a request held up by a long lock (a migration, a
/// `VACUUM FULL`, an open admin transaction) is answered 503 `DATABASE_TIMEOUT` promptly,
/// instead of hanging, and gives its connection back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

impl SessionLimits {
    /// How long we wait ourselves for the database's answer to one operation (checkout,
    /// connecting, and its statements): a little longer than the server's own statement
    /// timeout, so that a server which keeps time answers first, with its own error. This bound
    /// is for a server that answers nothing at all (hung, stopped, or gone from the network),
    /// which no server-side limit can catch.
    pub fn answer_bound(&self) -> Duration {
        self.statement_timeout + ANSWER_MARGIN
    }
}

/// What [`SessionLimits::answer_bound`] adds to the statement timeout: time for a cancelled
/// statement's error to reach us on a busy machine.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// How long a connection may sit idle, seen from TCP, before the kernel probes the peer, and
/// then how often and how many times: a server that vanished from the network (a failed-over
/// primary, a cut link) is noticed within about 20 s by a connection waiting in the pool, which
/// is then closed and replaced, instead of being handed out to hang. (Unix sockets have no
/// keepalive; a server that is gone closes them at once.)
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
const KEEPALIVE_RETRIES: u32 = 3;

/// [`connect_pool`] for serving: each session gets `limits`, set when it connects, so no
/// statement pays a round trip for them.
pub fn connect_serving_pool(
    config: tokio_postgres::Config,
    tls: &tls::DatabaseTls,
    max_connections: usize,
    limits: SessionLimits,
) -> Pool {
    // Longer than the answer bound, so that an operation cut off by it (see [`within`]) is
    // told it timed out, whatever step it was at; these bound what runs outside it.
    build_pool(
        serving_config(config, limits),
        tls,
        max_connections,
        limits.answer_bound() + ANSWER_MARGIN,
    )
}

/// `config` with the settings every serving session has: `limits`, and TCP keepalives.
fn serving_config(
    mut config: tokio_postgres::Config,
    limits: SessionLimits,
) -> tokio_postgres::Config {
    let mut options = config.get_options().unwrap_or_default().to_owned();
    // After any the connection string sets: the last setting of a parameter wins. No JIT:
    // every statement here reads or writes a few rows by index, where compiling takes far
    // longer (100 ms and more) than running, and a misestimated plan would pay that on every
    // execution. UTC: the documents that events and kept answers hold are JSON the database
    // builds, which writes instants in the session's time zone; in UTC each reads back exactly
    // (many zones' offsets before about 1900 have seconds, which RFC 3339 cannot write).
    options.push_str(&format!(
        " -c statement_timeout={} -c lock_timeout={} -c jit=off -c TimeZone=UTC",
        limits.statement_timeout.as_millis(),
        limits.lock_timeout.as_millis()
    ));
    config.options(options.trim_start());
    // So an operator tells the service's sessions apart in `pg_stat_activity`.
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    config
}

/// The `application_name` of the service's sessions, unless `DATABASE_URL` names another.
const APPLICATION_NAME: &str = "orders";

/// The `application_name` of the connections that reads share (see [`shared_connections`]), in the same
/// case.
const SHARED_APPLICATION_NAME: &str = "orders-shared";

/// Opens sessions of their own, beside the pool, for work that must not wait behind requests
/// for a pooled connection (the change feed's watcher, see `crate::app::events`). Cheap to
/// clone.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: tls::DatabaseTls,
}

impl Connector {
    /// Connects as a serving pool made of the same arguments does (see
    /// [`connect_serving_pool`]).
    pub fn serving(
        config: tokio_postgres::Config,
        tls: &tls::DatabaseTls,
        limits: SessionLimits,
    ) -> Self {
        Self {
            config: serving_config(config, limits),
            tls: tls.clone(),
        }
    }

    /// Connects as this does, but names its sessions as shared by reads, unless the
    /// configuration named them otherwise.
    pub fn for_shared_reads(&self) -> Self {
        let mut config = self.config.clone();
        if config.get_application_name() == Some(APPLICATION_NAME) {
            config.application_name(SHARED_APPLICATION_NAME);
        }
        // After the serving limits: the last setting of a parameter wins.
        let options = format!(
            "{} -c lock_timeout={}",
            config.get_options().unwrap_or_default(),
            shared_connections::SHARED_LOCK_WAIT.as_millis()
        );
        config.options(options.trim_start());
        Self {
            config,
            tls: self.tls.clone(),
        }
    }

    /// Connects as [`connect_pool`] does: no TLS, the server's own limits.
    pub fn plain(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            tls: tls::DatabaseTls::Off,
        }
    }

    /// A new session. The task that drives it ends when the client is dropped, or when the
    /// session breaks (the client's next query then fails).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        Ok(self.connect_driven().await?.0)
    }

    /// [`Connector::connect`], with the handle of the task that drives the session: aborting
    /// it closes the session at once, with statements pending or not.
    pub async fn connect_driven(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::AbortHandle), tokio_postgres::Error> {
        match &self.tls {
            tls::DatabaseTls::Off => drive(&self.config, NoTls).await,
            tls::DatabaseTls::Rustls(connector) => drive(&self.config, connector.clone()).await,
        }
    }
}

/// Connects with `tls` and spawns the task that drives the session.
async fn drive<T>(
    config: &tokio_postgres::Config,
    tls: T,
) -> Result<(tokio_postgres::Client, tokio::task::AbortHandle), tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %crate::telemetry::error_chain(&error), "a database session of its own broke");
        }
    });
    Ok((client, driver.abort_handle()))
}

/// The largest page a read may bring over a shared connection (see [`Reader::query`]): the
/// default page of 100 orders, each with its services, is a few hundred rows; larger pages
/// (up to 1000 orders of 50 services each) go over connections of their own.
pub const SHARED_PAGE_LIMIT: usize = 100;

/// How many rows a large read takes before it lets the other requests on its thread go on (a
/// millisecond's work or so).
const ROWS_BETWEEN_YIELDS: u32 = 1024;

/// Where reads run: those with small answers on a shared connection when one is usable (see
/// [`shared_connections`]), the rest, and all of them while none is, on a pooled connection. Cheap to
/// clone.
#[derive(Clone)]
pub struct Reader {
    pool: Pool,
    shared: shared_connections::SharedConnections,
    /// Places for reads that met a lock on a shared connection and wait for it on a pooled
    /// one: half the pool, so that reads of a locked table cannot take every pooled
    /// connection from the writes and reads of other tables.
    lock_waits: Arc<tokio::sync::Semaphore>,
}

impl Reader {
    pub fn new(pool: Pool, shared: shared_connections::SharedConnections) -> Self {
        let lock_waits = (pool.status().max_size / 2).max(1);
        Self {
            pool,
            shared,
            lock_waits: Arc::new(tokio::sync::Semaphore::new(lock_waits)),
        }
    }

    pub fn shared(&self) -> &shared_connections::SharedConnections {
        &self.shared
    }

    /// The rows of `sql`, a read whose answer is small (a few hundred rows at most), so that
    /// the reads queued behind it on a shared connection wait for it only briefly.
    pub async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        match self.shared.query(sql, params).await {
            Some(Ok(rows)) => return Ok(rows),
            // A lock stands in its way: it waits for it on a connection of its own, up to the
            // lock timeout, instead of holding up the reads queued behind it; or, with as many
            // waiting so already as may, it is answered as a lock timeout at once.
            Some(Err(error)) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                let Ok(_place) = self.lock_waits.try_acquire() else {
                    return Err(error.into());
                };
                return Box::pin(self.query_alone(sql, params)).await;
            }
            // The shared connection broke under it, or the server ended it (it is being
            // replaced): a read can simply be asked again, on a connection of its own.
            Some(Err(error)) if !StoreError::classify_quietly(&error).is_unavailable() => {
                return Err(error.into());
            }
            Some(Err(_)) | None => {}
        }
        // Boxed: taking a pooled connection is a large future (the pool's own timeouts among
        // it), and every read would otherwise carry its room, and move it, from future to
        // future, up to the request's.
        Box::pin(self.query_alone(sql, params)).await
    }

    /// Hands each row of `sql` to `each` as it arrives, on a pooled connection, until the rows
    /// end or `each` says to stop: for reads whose answers are large, which would hold up the
    /// reads queued behind them on a shared connection, and need not sit in memory whole.
    pub async fn for_each_row_alone(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
        mut each: impl FnMut(&tokio_postgres::Row) -> std::ops::ControlFlow<()>,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        let rows = client.query_raw(&statement, params.iter().copied()).await?;
        let mut rows = std::pin::pin!(rows);
        let mut taken: u32 = 0;
        while let Some(row) = rows.try_next().await? {
            if each(&row).is_break() {
                // The rest of the answer is read and dropped by the connection itself.
                break;
            }
            taken = taken.wrapping_add(1);
            if taken.is_multiple_of(ROWS_BETWEEN_YIELDS) {
                // Rows that have arrived are taken without waiting, so a page of 50,000 would
                // keep its thread from every other request until it is written.
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// The rows of `sql` on a pooled connection: for reads whose answers are large, which
    /// would hold up every read queued behind them on a shared one.
    pub async fn query_alone(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}

/// Opens a pool of connections to the configured database. Connections are made lazily, so
/// this succeeds even when the database is down; requests then fail with
/// [`StoreError::Unavailable`] until it is back. Its sessions have the server's own limits
/// (none, by default), and no TLS: for the private cluster's Unix socket, administration and
/// tests; serving uses [`connect_serving_pool`].
pub fn connect_pool(config: tokio_postgres::Config, max_connections: usize) -> Pool {
    build_pool(
        config,
        &tls::DatabaseTls::Off,
        max_connections,
        Duration::from_secs(5),
    )
}

/// A pool over `tls` whose checkout, connecting and recycling each give up after `wait`.
fn build_pool(
    config: tokio_postgres::Config,
    tls: &tls::DatabaseTls,
    max_connections: usize,
    wait: Duration,
) -> Pool {
    let manager_config = ManagerConfig {
        // A broken connection shows itself on first use and is replaced; checking each one
        // on checkout would cost a round trip per request.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        tls::DatabaseTls::Off => Manager::from_config(config, NoTls, manager_config),
        tls::DatabaseTls::Rustls(connector) => {
            Manager::from_config(config, connector.clone(), manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(max_connections)
        .runtime(Runtime::Tokio1)
        // Bounded waits, so an unreachable database turns into a prompt 503, not a hung request.
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .expect("a pool with a runtime and timeouts always builds")
}

/// Everything that can go wrong in storage, in terms the layers above can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such record")]
    NotFound,
    #[error("the record has changed since the version the caller holds")]
    VersionMismatch,
    #[error("the order's time is less than 3 hours from another order's")]
    OrderTimeConflict {
        /// The order it clashes with, when it could be found (it may have been deleted since).
        conflicting_order_id: Option<OrderId>,
    },
    #[error("a service with that name already exists")]
    ServiceNameTaken,
    #[error("the service is booked by at least one order")]
    ServiceInUse,
    #[error("unknown services: {0:?}")]
    UnknownServices(Vec<ServiceId>),
    #[error("an API key with that name exists (or existed, and was revoked)")]
    KeyNameTaken,
    #[error("the database cannot be reached")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database did not finish in time: a statement or lock wait outlasted the session's
    /// limits, or every pooled connection stayed busy. Nothing was changed.
    #[error("the database did not answer in time")]
    TimedOut(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database aborted the transaction to resolve contention (a deadlock or a
    /// serialization failure between racing writers); running it again is safe.
    #[error("the transaction was aborted by contention")]
    Contention(#[source] tokio_postgres::Error),
    #[error("database error")]
    Database(#[source] tokio_postgres::Error),
    /// An event whose stored document this build cannot read: a fault, never the caller's.
    #[error("event {0} cannot be read")]
    CorruptEvent(i64),
    /// A kept idempotent answer that this build cannot read: a fault, never the caller's.
    #[error("a kept answer cannot be read")]
    CorruptAnswer,
}

/// Classifies a database error by what can be done about it: wait for the database, run the
/// write again, or report a fault. Constraint violations are not read here: their meaning
/// depends on the statement, so each call site maps the ones it expects (see
/// [`violated_constraint`]) and leaves the rest to this.
impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        let classified = Self::classify(error);
        classified.count_fault();
        classified
    }
}

/// What kind of failure an error is, without the error itself: see [`StoreError::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Unavailable,
    TimedOut,
    Contention,
    Other,
}

impl Failure {
    pub(crate) fn is_unavailable(self) -> bool {
        self == Self::Unavailable
    }
}

impl StoreError {
    /// What kind of failure `error` is, counting nothing in the metrics.
    pub(crate) fn classify_quietly(error: &tokio_postgres::Error) -> Failure {
        let Some(db_error) = error.as_db_error() else {
            // No answer from the server: the connection is gone or could not be made (a TLS
            // handshake that failed included). Anything else without a server answer (a type
            // mismatch, say) is a bug, not an outage.
            let lost_connection = error.is_closed()
                || std::error::Error::source(error).is_some_and(|cause| {
                    cause.is::<std::io::Error>() || cause.is::<tls::HandshakeError>()
                });
            return if lost_connection {
                Failure::Unavailable
            } else {
                Failure::Other
            };
        };
        match db_error.code() {
            &SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE => {
                Failure::Contention
            }
            // Cancelled by statement_timeout, or a lock wait by lock_timeout.
            &SqlState::QUERY_CANCELED | &SqlState::LOCK_NOT_AVAILABLE => Failure::TimedOut,
            code if is_unavailable(code) => Failure::Unavailable,
            _ => Failure::Other,
        }
    }

    fn classify(error: tokio_postgres::Error) -> Self {
        match Self::classify_quietly(&error) {
            Failure::Unavailable => Self::Unavailable(Box::new(error)),
            Failure::TimedOut => Self::TimedOut(Box::new(error)),
            Failure::Contention => Self::Contention(error),
            Failure::Other => Self::Database(error),
        }
    }
}

/// The name of the constraint `error` reports as violated, if it is a constraint violation.
pub(crate) fn violated_constraint(error: &tokio_postgres::Error) -> Option<&str> {
    error
        .as_db_error()
        .and_then(|db_error| db_error.constraint())
}

/// Server states that mean "try again later" rather than "this request is wrong".
fn is_unavailable(code: &SqlState) -> bool {
    [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CONNECTION_FAILURE,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
    ]
    .contains(code)
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        let classified = match error {
            // Counted by the conversion of the database's error.
            PoolError::Backend(error) => return error.into(),
            // Every connection stayed busy: the database is slow or locked, not gone.
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                Self::TimedOut(Box::new(error))
            }
            other => Self::Unavailable(Box::new(other)),
        };
        classified.count_fault();
        classified
    }
}

impl StoreError {
    /// Counts a fault of the database (not a refusal by its rules) in the metrics, by kind.
    fn count_fault(&self) {
        let kind = match self {
            Self::TimedOut(_) => "timed_out",
            Self::Unavailable(_) => "unavailable",
            Self::Contention(_) => "contention",
            Self::Database(_) => "other",
            _ => return,
        };
        crate::telemetry::metrics::count_database_error(kind);
    }

    /// No answer from the database within our own `bound` (see [`within`]), counted in the
    /// metrics like a timeout the server reported.
    pub(crate) fn no_answer(bound: Duration) -> Self {
        let error = Self::TimedOut(Box::new(NoAnswer(bound)));
        error.count_fault();
        error
    }

    /// An order write refused by the 3-hour rule, counted in the metrics.
    pub(crate) fn order_time_conflict(conflicting_order_id: Option<OrderId>) -> Self {
        metrics::counter!(crate::telemetry::metrics::TIME_CONFLICTS).increment(1);
        Self::OrderTimeConflict {
            conflicting_order_id,
        }
    }
}

/// A condition for the WHERE clause of a statement that changes the record whose id is `$1`:
/// it takes the advisory lock (`space`, that id) for the rest of the transaction, once, before
/// the statement writes anything. Writes of one record then get their transaction ids (which
/// order the change feed, see [`events`]) one after the other, in the order they commit: a
/// transaction id is handed out at a statement's first write, which for a row another writer
/// holds comes before the wait for it, so without the lock the writer that waits can hold the
/// smaller id and still commit second. The lock itself hands out no id, and a statement that
/// waited for it still sees the row as the writer before it left it (read committed re-reads a
/// row that changed under it). Ids past the key's range share keys: such writes take turns.
pub(crate) fn holding_record_lock(space: i32) -> String {
    format!(
        "(SELECT true FROM (SELECT pg_advisory_xact_lock({space}, ($1::bigint % 2147483647)::int)) AS locked)"
    )
}

/// What a write transaction's statements came to, once it is committed or rolled back.
pub(crate) enum Settled<T> {
    /// Committed.
    Written(T),
    /// Rolled back: the statement that decides the write touched no row.
    NoRow,
    /// Rolled back: a statement failed with this error.
    Failed(tokio_postgres::Error),
}

/// Commits `transaction` if its statements produced a value, else rolls it back. Callers
/// explain a failure only after this, since an aborted transaction answers no more queries.
pub(crate) async fn settle<T>(
    transaction: deadpool_postgres::Transaction<'_>,
    outcome: Result<Option<T>, tokio_postgres::Error>,
) -> Result<Settled<T>, StoreError> {
    Ok(match outcome {
        Ok(Some(value)) => {
            transaction.commit().await?;
            Settled::Written(value)
        }
        Ok(None) => {
            transaction.rollback().await?;
            Settled::NoRow
        }
        Err(error) => {
            transaction.rollback().await?;
            Settled::Failed(error)
        }
    })
}

/// After a conditional write to `table` touched no row: was the row with `id` missing, or at
/// another version?
#[tracing::instrument(name = "why_not_written", skip_all, fields(table = table, id = id))]
pub(crate) async fn why_not_written(
    client: &impl deadpool_postgres::GenericClient,
    table: &'static str,
    id: i64,
) -> Result<StoreError, StoreError> {
    let statement = client
        .prepare_cached(&format!("SELECT 1 FROM {table} WHERE id = $1"))
        .await?;
    Ok(match client.query_opt(&statement, &[&id]).await? {
        Some(_) => StoreError::VersionMismatch,
        None => StoreError::NotFound,
    })
}

/// How many times a write is tried before contention is reported to the caller.
const WRITE_ATTEMPTS: u32 = 6;

impl StoreError {
    /// Whether another try of the same write can succeed: the database aborted it to break a
    /// deadlock, or it clashed with an order that was deleted before the clash could be
    /// reported.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Contention(_)
                | Self::OrderTimeConflict {
                    conflicting_order_id: None
                }
        )
    }
}

/// Runs `write` again when it failed transiently (see [`StoreError::is_transient`]).
pub(crate) async fn retry_transient<T, F, Fut>(write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    retry_while(write, StoreError::is_transient).await
}

/// Runs `write` again, with backoff, while it fails with an error that `is_transient` says
/// another try can fix, up to [`WRITE_ATTEMPTS`] tries in all.
pub async fn retry_while<T, E, F, Fut>(
    mut write: F,
    is_transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Err(error) if is_transient(&error) && attempt < WRITE_ATTEMPTS => {
                tracing::info!(attempt, "retrying a write that contention aborted");
                tokio::time::sleep(retry_delay(attempt)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// How long to wait before try `attempt + 1`: exponential backoff with full jitter (a uniform
/// draw from zero to the cap), so writers that collided once spread out instead of colliding
/// again in step. The caps are 10, 20, 40, 80 and 160 ms: all tries fit well inside a second.
fn retry_delay(attempt: u32) -> Duration {
    let cap_ms = 10u64 << (attempt - 1).min(4);
    Duration::from_millis(rand::random_range(0..=cap_ms))
}

/// Runs `work`, one operation's use of the database behind `pool`, but waits no longer than
/// `bound` for it: past that it is cut off (dropped) and the answer is
/// [`StoreError::TimedOut`], with a [`NoAnswer`] as its cause.
///
/// A connection whose statement was cut off is not used again. tokio-postgres would keep it
/// usable (the late answer is read and thrown away once it comes), but it comes only if the
/// server ever answers: a stopped server answers when it resumes, one gone from the network
/// never, and TCP keepalive does not fire while a request waits unacknowledged. So every idle
/// connection taken from the pool since `work` began is closed; a few healthy ones among them
/// cost only a reconnect, and connections still in use by other work are left to it.
pub async fn within<T, E>(
    pool: &Pool,
    bound: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    let began = Instant::now();
    match tokio::time::timeout(bound, work).await {
        Ok(outcome) => outcome,
        // By now `work` is dropped, and the connections it held are back in the pool.
        Err(_) => {
            let closed =
                pool.retain(|_, metrics| metrics.recycled.unwrap_or(metrics.created) < began);
            tracing::warn!(
                ?bound,
                connections_closed = closed.removed.len(),
                "the database did not answer in time: cut off"
            );
            Err(StoreError::no_answer(bound).into())
        }
    }
}

/// The database gave no answer within our own bound (see [`within`]). Unlike a statement the
/// server cancelled, what was sent may still be carried out if the server resumes: a write
/// cut off while its commit was under way can have been applied.
#[derive(Debug, thiserror::Error)]
#[error("no answer from the database within {0:?}")]
pub struct NoAnswer(pub Duration);

pub fn pool_status(pool: &Pool) -> PoolStatus {
    let status = pool.status();
    PoolStatus {
        max_size: status.max_size,
        size: status.size,
        available: status.available,
        waiting: status.waiting,
    }
}

/// Readiness's own line to the database: one connection, made just as the serving pool makes
/// its own (the same settings, the same TLS) but never one of the pool's, so a pool whose
/// connections are all busy is not mistaken for a database that cannot be reached. The
/// connection is kept between checks and replaced when it breaks or a check is cut off.
pub struct Probe {
    pool: Pool,
    connection: tokio::sync::Mutex<ProbeConnection>,
}

/// Readiness's connection, and whether its last check was answered: one that was not (it
/// failed, or was cut off mid-query) is replaced at the next check, never asked again.
#[derive(Default)]
struct ProbeConnection {
    client: Option<deadpool_postgres::ClientWrapper>,
    answered: bool,
}

impl Probe {
    /// A probe that connects like `pool` does. Connects only when first asked.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            connection: tokio::sync::Mutex::new(ProbeConnection::default()),
        }
    }

    /// Whether the database answers a trivial query within `bound`: [`StoreError::TimedOut`]
    /// when it is there but does not answer in time, [`StoreError::Unavailable`] when it
    /// cannot be reached.
    pub async fn check(&self, bound: Duration) -> Result<(), StoreError> {
        use deadpool::managed::Manager as _;
        let check = async {
            let mut slot = self.connection.lock().await;
            let usable = slot.answered && slot.client.as_ref().is_some_and(|c| !c.is_closed());
            if !usable && let Some(mut old) = slot.client.take() {
                // The manager keeps a handle on each client it made; one it is not told about
                // would stay listed for ever.
                self.pool.manager().detach(&mut old);
            }
            let client = match &slot.client {
                Some(client) => client,
                None => slot.client.insert(self.pool.manager().create().await?),
            };
            let answered = client.simple_query("SELECT 1").await.map(drop);
            // Cut off before this line, `answered` stays false: the next check replaces it.
            slot.answered = answered.is_ok();
            answered.map_err(StoreError::from)
        };
        answered_within(bound, check).await
    }
}

/// `work`, or [`StoreError::TimedOut`] when the database has not answered it within `bound`:
/// for work on a session of its own, beside the pool (see [`within`] for the pool's).
pub async fn answered_within<T>(
    bound: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(bound, work)
        .await
        .unwrap_or_else(|_| Err(StoreError::no_answer(bound)))
}

/// Whether the database answers a trivial query, on a connection from `pool`.
#[tracing::instrument(name = "ping", skip_all)]
pub async fn ping(pool: &Pool) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached("SELECT 1").await?;
    client.query_one(&statement, &[]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn vanished_conflict() -> StoreError {
        StoreError::OrderTimeConflict {
            conflicting_order_id: None,
        }
    }

    #[tokio::test]
    async fn a_write_that_fails_transiently_is_tried_again() {
        let calls = Cell::new(0);
        let outcome = retry_transient(|| {
            calls.set(calls.get() + 1);
            let call = calls.get();
            async move {
                if call < 3 {
                    Err(vanished_conflict())
                } else {
                    Ok(call)
                }
            }
        })
        .await;
        assert_eq!(outcome.unwrap(), 3);
    }

    #[tokio::test]
    async fn retries_stop_after_the_last_attempt_and_never_start_for_other_errors() {
        let calls = Cell::new(0);
        let outcome: Result<(), _> = retry_transient(|| {
            calls.set(calls.get() + 1);
            async { Err(vanished_conflict()) }
        })
        .await;
        assert!(matches!(outcome, Err(StoreError::OrderTimeConflict { .. })));
        assert_eq!(calls.get(), WRITE_ATTEMPTS);

        calls.set(0);
        let outcome: Result<(), _> = retry_transient(|| {
            calls.set(calls.get() + 1);
            async { Err(StoreError::ServiceNameTaken) }
        })
        .await;
        assert!(matches!(outcome, Err(StoreError::ServiceNameTaken)));
        assert_eq!(calls.get(), 1);
    }
}
