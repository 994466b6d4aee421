//! The application: what each operation decides, between the HTTP layer (which parses
//! requests and maps outcomes to responses) and storage (which speaks SQL).
//!
//! Here it is decided which error wins when a request has several faults, what must be looked
//! up and in which order, and what a precondition means for a missing record. Functions take
//! the shared [`AppState`] and values the HTTP layer has already parsed into domain types, and
//! return records or an [`AppError`]; they know nothing of HTTP. Cross-cutting rules of the
//! operations (who may call them, what else a write must record) belong here too.

pub mod access;
mod error;
pub mod events;
pub mod free_slots;
pub mod idempotency;
pub mod keys;
pub mod orders;
pub mod rate_limit;
pub mod services;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::Pool;

pub use self::error::{AppError, Resource};
use self::{access::KeyRing, idempotency::DEFAULT_RETENTION};
use crate::{
    storage::{self, StoreError},
    telemetry::metrics::Metrics,
};

/// What every operation runs against. Cheap to clone: it is handles all the way down.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// The API keys, as this instance last loaded them.
    pub keys: KeyRing,
    /// How often the keys are reloaded (see [`access`]).
    pub key_refresh_interval: Duration,
    /// How long the first answer to an idempotent create is kept.
    pub idempotency_retention: Duration,
    /// The most requests this instance works on at once; past it, requests are refused at
    /// once rather than queued (probes excepted).
    pub max_in_flight: usize,
    /// How long one operation waits for the database's answers before it is cut off and
    /// answered 503 `DATABASE_TIMEOUT` (see [`storage::within`]).
    pub answer_bound: Duration,
    /// Readiness's own connection to the database, beside the pool.
    readiness: Arc<storage::Probe>,
    /// This instance's metrics, as `/metrics` shows them.
    pub metrics: Metrics,
    /// Set once shutdown begins: readiness then answers 503.
    pub draining: Draining,
}

/// Whether the instance is shutting down, shared by the server (which sets it) and readiness
/// (which reports it).
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn begin(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The most requests an instance works on at once, unless configured otherwise: enough for
/// bursts of many clients (each request is short), and few enough that their buffered bodies
/// (64 KiB at most each) take little memory.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

impl AppState {
    pub fn new(pool: Pool) -> Self {
        Self {
            readiness: Arc::new(storage::Probe::new(pool.clone())),
            pool,
            keys: KeyRing::default(),
            key_refresh_interval: access::KEY_REFRESH_INTERVAL,
            idempotency_retention: DEFAULT_RETENTION,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            answer_bound: storage::SessionLimits::default().answer_bound(),
            metrics: Metrics::new(),
            draining: Draining::default(),
        }
    }

    /// Runs one operation's database work, cut off after [`AppState::answer_bound`].
    pub(crate) async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, AppError>>,
    ) -> Result<T, AppError> {
        storage::within(&self.pool, self.answer_bound, work).await
    }

    /// Loads the keys, then keeps them current and purges expired idempotency records in the
    /// background, until the returned tasks are aborted. A first load that fails is logged and
    /// left to the background task: until it succeeds, protected operations answer 503.
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
        tasks.push(self.metrics.spawn_upkeep());
        BackgroundWork(tasks)
    }
}

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
pub async fn ready(state: &AppState) -> Result<storage::PoolStatus, AppError> {
    state.readiness.check(READY_BOUND).await?;
    Ok(storage::pool_status(&state.pool))
}
