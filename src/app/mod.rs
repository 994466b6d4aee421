//! The application: what each operation decides, between the HTTP layer (which parses
//! requests and maps outcomes to responses) and storage (which speaks SQL).
//!
//! Here it is decided which error wins when a request has several faults, what must be looked
//! up and in which order, and what a precondition means for a missing record. Functions take
//! the shared [`AppState`] and values the HTTP layer has already parsed into domain types, and
//! return records or an [`AppError`]; they know nothing of HTTP. Cross-cutting rules of the
//! operations (who may call them, what else a write must record) belong here too.

pub mod authentication;
mod error;
pub mod events;
pub mod free_slots;
pub mod idempotency;
pub mod key_management;
pub mod orders;
pub mod rate_limit;
pub mod services;
pub mod waiting_readers;

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;

use self::authentication::KeyRing;
pub use self::error::{AppError, Resource};
use crate::{
    domain::{PoolStatus, RateLimit},
    storage::{self, StoreError, shared_connections::SharedConnections},
    telemetry::metrics::Metrics,
};

/// What every operation runs against. Cheap to clone: it is handles all the way down.
#[derive(Clone)]
pub struct AppState {
    /// Connections for writes, and for reads that cannot go over `reader`'s shared ones.
    pub pool: Pool,
    /// Where reads run (see [`storage::Reader`]).
    pub reader: storage::Reader,
    /// The API keys, as this instance last loaded them.
    pub keys: KeyRing,
    /// How often the keys are reloaded (see [`authentication`]).
    pub key_refresh_interval: Duration,
    /// How long the first answer to an idempotent create is kept.
    pub idempotency_retention: Duration,
    /// How many requests this instance works on at once, and how long others wait for a place.
    pub admission: Admission,
    /// How long one operation waits for the database's answers before it is cut off and
    /// answered 503 `DATABASE_TIMEOUT` (see [`storage::within`]).
    pub answer_bound: Duration,
    /// Readiness's own connection to the database, beside the pool.
    readiness: Arc<storage::Probe>,
    /// This instance's metrics, as `/metrics` shows them.
    pub metrics: Metrics,
    /// Whether `/metrics` is served on a listener of its own, not beside the API (which then
    /// has nothing at that path).
    pub metrics_served_apart: bool,
    /// Set once shutdown begins: readiness then answers 503, and waiting feed readers are
    /// answered.
    pub draining: Draining,
    /// Opens the sessions of this instance's own beside the pool (see [`events`]).
    pub connector: storage::Connector,
    /// The change feed's head, for readers waiting on it.
    pub feed: events::FeedWatch,
    /// How long events are kept before they are purged.
    pub event_retention: Duration,
    /// The longest a feed reader is held waiting: [`events::MAX_WAIT`], unless the request
    /// timeout leaves less room (see [`AppState::fit_feed_wait_into`]).
    pub longest_feed_wait: Duration,
}

/// Whether the instance is shutting down, shared by the server (which moves it on), readiness
/// (which reports it) and the requests that wait (which stop waiting once the listener has
/// closed).
#[derive(Debug, Clone)]
pub struct Draining(Arc<tokio::sync::watch::Sender<ShutdownPhase>>);

/// How far shutting down has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownPhase {
    Serving,
    /// Readiness answers 503, so load balancers move away; new requests are still served.
    Draining,
    /// The listener is closed: no request can come that is not already here.
    ListenerClosed,
}

impl Default for Draining {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(
            ShutdownPhase::Serving,
        )))
    }
}

impl Draining {
    pub fn begin(&self) {
        self.0.send_replace(ShutdownPhase::Draining);
    }

    pub fn listener_closed(&self) {
        self.0.send_replace(ShutdownPhase::ListenerClosed);
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow() != ShutdownPhase::Serving
    }

    /// Returns once the listener has closed. A request that waits for news stops waiting then,
    /// not when draining begins: until the listener closes, its client would only ask this
    /// instance again, at once, in a loop.
    pub async fn until_listener_closed(&self) {
        let mut phase = self.0.subscribe();
        // The sender lives as long as `self`, so this only ends by the phase.
        let _ = phase
            .wait_for(|&phase| phase == ShutdownPhase::ListenerClosed)
            .await;
    }
}

/// What an instance's operations are configured with; start-up fills it in from the
/// settings (see `crate::config` for each one's meaning and default).
#[derive(Debug, Clone)]
pub struct Policies {
    pub idempotency_retention: Duration,
    pub event_retention: Duration,
    /// How long one operation waits for the database's answers (see [`storage::within`]).
    pub answer_bound: Duration,
    pub key_refresh_interval: Duration,
    /// The rate limit of keys that have none of their own.
    pub default_rate: Option<RateLimit>,
    /// How many connections small reads share (none: every read takes a pooled one).
    pub shared_connections: usize,
    pub admission: Admission,
    /// How many change feed readers may wait at once.
    pub feed_waiting: waiting_readers::WaitingBounds,
}

/// How many requests an instance works on at once, and how the others wait: in the order
/// they came, each for a bounded time (see `http::pipeline::in_flight`). Probes excepted.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_in_flight: usize,
    /// How long a request waits for a place before it is refused, 503 `OVERLOADED`.
    pub max_queue_wait: Duration,
    /// The most requests waiting at once; past it, a request is refused at once.
    pub max_queued: usize,
    /// Refusals without a route or a key answered at once each second; past it, each waits a
    /// second (see `http::pipeline::pace_refusals`). 0: never paced.
    pub anonymous_refusals_per_second: u32,
}

impl AppState {
    /// The state of an instance serving from `pool`, whose own sessions `connector` opens
    /// (its readiness probe's, its feed watcher's, and those that small reads share), with
    /// `policies`.
    pub fn new(pool: Pool, connector: storage::Connector, policies: &Policies) -> Self {
        Self {
            readiness: Arc::new(storage::Probe::new(pool.clone())),
            reader: storage::Reader::new(
                pool.clone(),
                SharedConnections::new(connector.clone(), policies.shared_connections),
            ),
            pool,
            keys: KeyRing::with_default_rate(policies.default_rate),
            key_refresh_interval: policies.key_refresh_interval,
            idempotency_retention: policies.idempotency_retention,
            admission: policies.admission,
            answer_bound: policies.answer_bound,
            metrics: Metrics::new(),
            metrics_served_apart: false,
            draining: Draining::default(),
            connector,
            feed: events::FeedWatch::new(policies.feed_waiting),
            event_retention: policies.event_retention,
            longest_feed_wait: events::MAX_WAIT,
        }
    }

    /// Shortens [`AppState::longest_feed_wait`] so that a waiting feed read (a read before the
    /// wait and one after it, each within [`AppState::answer_bound`]) is answered before
    /// `request_timeout` cuts its connection off.
    pub fn fit_feed_wait_into(&mut self, request_timeout: Duration) {
        let reads = 2 * self.answer_bound + FEED_WAIT_MARGIN;
        self.longest_feed_wait = events::MAX_WAIT.min(request_timeout.saturating_sub(reads));
    }

    /// Runs one operation's database work, cut off after [`AppState::answer_bound`].
    pub(crate) fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, AppError>>,
    ) -> impl Future<Output = Result<T, AppError>> {
        // Boxed once, here: passed down by value, each async layer (this one, `within`, the
        // timeout) would hold room for it of its own, and a read of one order came to 5 KiB
        // of future, moved from layer to layer up to the request's own.
        storage::within(&self.pool, self.answer_bound, Box::pin(work))
    }

    /// Loads the keys, then keeps them current, purges expired idempotency records and events
    /// and follows the change feed's head in the background, until the returned tasks are
    /// aborted. A first load that fails is logged and left to the background task: until it
    /// succeeds, protected operations answer 503.
    pub async fn start_background_work(&self) -> BackgroundWork {
        if let Err(error) = self.keys.refresh(&self.pool).await {
            tracing::warn!(
                error = %crate::telemetry::error_chain(&error),
                "could not load the API keys; protected operations answer 503 until they are"
            );
        }
        let mut tasks = Vec::from(
            self.keys
                .spawn_refresher(self.pool.clone(), self.key_refresh_interval),
        );
        tasks.push(idempotency::spawn_purger(self));
        tasks.push(events::spawn_watcher(self, self.connector.clone()));
        tasks.push(events::spawn_purger(self));
        tasks.push(self.metrics.spawn_upkeep());
        tasks.push(self.reader.shared().spawn_keeper());
        BackgroundWork(tasks)
    }
}

/// Deletes what is older than `retention` every so often, until the returned task is aborted:
/// `purge_batch` deletes up to `batch` rows and says how many, and is called again while
/// batches come back full. Each batch is bounded on its own, so a backlog (a retention
/// shortened, a purge long stopped) is worked off however long it takes, and a batch cut off
/// leaves the next tick to go on. `what` names the rows in the log.
fn spawn_purger<Batch>(
    state: &AppState,
    retention: Duration,
    batch: u64,
    what: &'static str,
    purge_batch: impl Fn(Pool, Duration) -> Batch + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    Batch: Future<Output = Result<u64, StoreError>> + Send + 'static,
{
    let pool = state.pool.clone();
    let bound = state.answer_bound;
    // Often enough that a row outlives its retention by at most a small part of it.
    let interval = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        // The first purge one interval after start, not at once: a start is no reason to
        // purge, and a purge at a moment that depends on when the task is first run would
        // race whatever the instance does first.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let mut purged = 0;
            let outcome = loop {
                match storage::within(&pool, bound, purge_batch(pool.clone(), retention)).await {
                    Ok(deleted) if deleted < batch => break Ok(purged + deleted),
                    Ok(deleted) => purged += deleted,
                    Err(error) => break Err((purged, error)),
                }
            };
            match outcome {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged {what}"),
                Err((purged, error)) => tracing::warn!(
                    purged,
                    error = %crate::telemetry::error_chain(&error),
                    "could not purge all {what}"
                ),
            }
        }
    })
}

/// Time left, beside a waiting feed read's two reads, for the answer to be written.
const FEED_WAIT_MARGIN: Duration = Duration::from_secs(1);

/// The tasks that keep an instance's caches and tables tidy; they stop when this is dropped.
pub struct BackgroundWork(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundWork {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// What a write asks of the record's current version, from `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition<R> {
    /// None asked: write whatever the version (the record must exist: else 404).
    None,
    /// `*`: the record must exist, at any version (else the precondition fails).
    Exists,
    /// The record must be at one of these revisions. May be empty (tags that are not ours),
    /// which nothing matches.
    OneOf(Vec<R>),
}

impl<R> Precondition<R> {
    /// The revisions to pass to storage; `None` means any.
    fn revisions(&self) -> Option<&[R]> {
        match self {
            Self::None | Self::Exists => None,
            Self::OneOf(revisions) => Some(revisions),
        }
    }

    /// What a write's "no such record" means under this precondition: RFC 9110 (13.1.1) says
    /// `If-Match: *` is false when there is no current representation, so that is a failed
    /// precondition, not a missing record.
    fn missing(&self, resource: Resource, id: &str) -> AppError {
        match self {
            Self::None => AppError::not_found(resource, id),
            Self::Exists | Self::OneOf(_) => AppError::PreconditionFailed,
        }
    }

    /// Maps a storage error from a write under this precondition to the `resource` with `id`.
    fn on<'a>(
        &'a self,
        resource: Resource,
        id: &'a str,
    ) -> impl FnOnce(StoreError) -> AppError + 'a {
        move |error| match error {
            StoreError::NotFound => self.missing(resource, id),
            other => other.into(),
        }
    }
}

/// How long readiness waits for the database: well inside a load balancer's probe timeout
/// (commonly 1 to 5 s), so a hung database shows as `DATABASE_TIMEOUT`, not as a probe that
/// timed out with no answer.
pub const READY_BOUND: Duration = Duration::from_secs(1);

/// Whether the database answers, asked on readiness's own connection (not one of the pool's),
/// within [`READY_BOUND`]; when it does, how full the serving pool is. A pool whose connections
/// are all busy is reported as such, not as a database that cannot be reached.
pub async fn ready(state: &AppState) -> Result<PoolStatus, AppError> {
    state.readiness.check(READY_BOUND).await?;
    Ok(storage::pool_status(&state.pool))
}

/// This instance's metrics in Prometheus' text format, with the gauges of its database
/// connections read as they are now, so that a scrape never sees them stale.
pub fn metrics_text(state: &AppState) -> String {
    let pool = storage::pool_status(&state.pool);
    state
        .metrics
        .set_pool_status(pool.max_size, pool.size, pool.available, pool.waiting);
    state
        .metrics
        .set_shared_connections(state.reader.shared().status());
    state.metrics.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_wait_fits_inside_the_request_timeout_with_its_two_reads() {
        let pool = storage::connect_pool(tokio_postgres::Config::new(), 1);
        let policies = Policies {
            idempotency_retention: Duration::from_secs(60),
            event_retention: Duration::from_secs(60),
            answer_bound: Duration::from_secs(5),
            key_refresh_interval: Duration::from_secs(2),
            default_rate: None,
            shared_connections: 0,
            admission: Admission {
                max_in_flight: 1,
                max_queue_wait: Duration::ZERO,
                max_queued: 0,
                anonymous_refusals_per_second: 0,
            },
            feed_waiting: waiting_readers::WaitingBounds {
                per_instance: 1,
                per_key: 1,
            },
        };
        let mut state = AppState::new(
            pool.clone(),
            storage::Connector::plain(tokio_postgres::Config::new()),
            &policies,
        );
        // The default answer bound is 5 s: two reads and a second's margin take 11 s.
        state.fit_feed_wait_into(Duration::from_secs(45));
        assert_eq!(state.longest_feed_wait, events::MAX_WAIT);
        state.fit_feed_wait_into(Duration::from_secs(20));
        assert_eq!(state.longest_feed_wait, Duration::from_secs(9));
        state.fit_feed_wait_into(Duration::from_secs(5));
        assert_eq!(state.longest_feed_wait, Duration::ZERO);
    }
}
