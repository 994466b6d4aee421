//! Metrics for Prometheus: what `GET /metrics` shows, and where the series are recorded.
//!
//! Each application has a registry of its own ([`Metrics`], in its `AppState`), and its pipeline
//! runs every request with that registry as the current one of the request's task. Code
//! anywhere below (the application, storage, authentication) records where the event happens
//! with the `metrics` macros, and the count lands in the registry of the app serving the
//! request. In production a process serves one app, so this is just its registry; in the
//! tests many apps share one process and each still reports only its own requests.
//!
//! Every label value is from a fixed set (a route template, never a raw path; a method
//! name or `_OTHER`; a status code; a reason), so no client can create series at will.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use ::metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The request duration histogram, named as OpenTelemetry's HTTP semantic conventions name
/// `http.server.request.duration` in Prometheus.
pub const REQUEST_DURATION: &str = "http_server_request_duration_seconds";
pub const ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// Database errors by `kind`: `timed_out`, `unavailable`, `contention` or `other`.
pub const DATABASE_ERRORS: &str = "db_errors_total";
/// Writes refused by the 3-hour rule.
pub const TIME_CONFLICTS: &str = "orders_time_conflicts_total";
/// Creates answered with the first answer to the same `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYS: &str = "idempotent_replays_total";
/// Refused credentials by `reason`: see [`AuthFailure`].
pub const AUTH_FAILURES: &str = "auth_failures_total";
/// Requests refused without a valid key, by `status`: see [`AnonymousRefusal`].
pub const ANONYMOUS_REFUSALS: &str = "anonymous_refusals_total";

/// Change feed reads waiting for events now (long polls).
pub const FEED_WAITING_READERS: &str = "orders_feed_waiting_readers";
/// Reads of the change feed from the database, by `kind`: see [`FeedRead`].
pub const FEED_READS: &str = "orders_feed_reads_total";
/// Change feed reads answered with no events before their wait was up, by `reason`: see
/// [`WaitCutShort`].
pub const FEED_WAITS_CUT_SHORT: &str = "orders_feed_waits_cut_short_total";

/// The route label of a request to no route of the API: one value for every such path.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the duration buckets, in seconds: requests take from about a millisecond
/// (a read of one order) to the 5 s bound of a database wait, and a little past it.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Why a credential was refused, as the `reason` label of [`AUTH_FAILURES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not one `Bearer <token>`.
    Malformed,
    /// A token that is no current key's: unknown, revoked, or not a key at all.
    Unknown,
    /// A current key without the scope the operation needs.
    Forbidden,
    /// No credential could be checked: the keys could not be loaded.
    KeysUnavailable,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Forbidden => "forbidden",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// Counts one refusal for this reason.
    pub fn count(self) {
        ::metrics::counter!(AUTH_FAILURES, "reason" => self.label()).increment(1);
    }
}

/// A request refused that came without a valid key: anyone can send these as fast as they
/// like, so their log lines are sampled, and [`ANONYMOUS_REFUSALS`] counts every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnonymousRefusal {
    /// 401: a protected operation, without a current key.
    Unauthenticated,
    /// 404: a path the API does not have.
    NotFound,
    /// 405: a method the path does not have.
    MethodNotAllowed,
}

impl AnonymousRefusal {
    /// Every kind, in the order of their indices.
    pub const ALL: [Self; 3] = [
        Self::Unauthenticated,
        Self::NotFound,
        Self::MethodNotAllowed,
    ];

    /// The `status` label.
    fn label(self) -> &'static str {
        match self {
            Self::Unauthenticated => "401",
            Self::NotFound => "404",
            Self::MethodNotAllowed => "405",
        }
    }

    /// The kind's place in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A read of the change feed from the database, as the `kind` label of [`FEED_READS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRead {
    /// A request's own read, before it waits if it does.
    First,
    /// The one read shared by the readers woken together at a cursor.
    Woken,
}

impl FeedRead {
    /// Counts one such read.
    pub fn count(self) {
        let kind = match self {
            Self::First => "first",
            Self::Woken => "woken",
        };
        ::metrics::counter!(FEED_READS, "kind" => kind).increment(1);
    }
}

/// Why a change feed reader was answered before its wait was up, as the `reason` label of
/// [`FEED_WAITS_CUT_SHORT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCutShort {
    /// Its key had as many readers waiting as it may: it did not wait at all.
    PerKey,
    /// The instance had as many readers waiting as it may: likewise.
    PerInstance,
    /// It waited longest when a new connection came at the cap on connections.
    ConnectionCap,
    /// The instance's listener closed as it shut down.
    Shutdown,
}

impl WaitCutShort {
    /// Counts one reader answered early for this reason.
    pub fn count(self) {
        let reason = match self {
            Self::PerKey => "per_key",
            Self::PerInstance => "per_instance",
            Self::ConnectionCap => "connection_cap",
            Self::Shutdown => "shutdown",
        };
        ::metrics::counter!(FEED_WAITS_CUT_SHORT, "reason" => reason).increment(1);
    }
}

/// The counts of one database error, by kind.
pub fn count_database_error(kind: &'static str) {
    ::metrics::counter!(DATABASE_ERRORS, "kind" => kind).increment(1);
}

/// One application's registry. Cheap to clone: one shared registry.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    active_requests: Gauge,
    durations: Arc<RwLock<DurationSeries>>,
}

/// The request duration histograms made so far, by route label and then by method and status:
/// found by reference, so a request whose series exists allocates nothing to record itself
/// (building the labelled key and looking it up in the registry cost more than the rest of
/// the recording). Bounded as the labels are: routes × methods × statuses.
type DurationSeries = HashMap<String, Vec<(&'static str, u16, Histogram)>>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

tokio::task_local! {
    /// The registry of the app whose request this task is serving.
    static CURRENT: Arc<PrometheusRecorder>;
}

impl Metrics {
    pub fn new() -> Self {
        install_dispatch();
        let recorder = Arc::new(
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_DURATION.to_owned()),
                    &DURATION_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .build_recorder(),
        );
        let handle = recorder.handle();
        let active_requests = ::metrics::with_local_recorder(&*recorder, || {
            describe();
            ::metrics::gauge!(ACTIVE_REQUESTS)
        });
        Self {
            recorder,
            handle,
            active_requests,
            durations: Arc::default(),
        }
    }

    /// Runs `future` with this registry as the one the `metrics` macros record to.
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        CURRENT.scope(self.recorder.clone(), future).await
    }

    /// Counts a request in flight until the returned guard is dropped, however the request
    /// ends (answered, or abandoned by its client).
    pub fn request_started(&self) -> CountedWhileAlive {
        CountedWhileAlive::start(self.active_requests.clone())
    }

    /// Records a served request's duration. `route` is a route template (or
    /// [`UNMATCHED_ROUTE`]), never a raw path.
    pub fn request_served(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let seconds = elapsed.as_secs_f64();
        let series = |known: &DurationSeries| {
            known.get(route).and_then(|by_answer| {
                by_answer
                    .iter()
                    .find(|(m, s, _)| *m == method && *s == status)
                    .map(|(_, _, histogram)| histogram.clone())
            })
        };
        let known = series(&self.durations.read().unwrap_or_else(|e| e.into_inner()));
        let histogram = known.unwrap_or_else(|| {
            let mut durations = self.durations.write().unwrap_or_else(|e| e.into_inner());
            // Another request may have made it since the look above.
            series(&durations).unwrap_or_else(|| {
                let labels = [
                    ("http_request_method", SharedString::from(method)),
                    ("http_route", SharedString::from(route.to_owned())),
                    (
                        "http_response_status_code",
                        SharedString::from(status.to_string()),
                    ),
                ];
                let histogram = ::metrics::with_local_recorder(&*self.recorder, || {
                    ::metrics::histogram!(REQUEST_DURATION, &labels)
                });
                durations.entry(route.to_owned()).or_default().push((
                    method,
                    status,
                    histogram.clone(),
                ));
                histogram
            })
        });
        histogram.record(seconds);
    }

    /// Counts a request refused without a valid key (see [`AnonymousRefusal`]).
    pub fn anonymous_refusal(&self, refusal: AnonymousRefusal) {
        ::metrics::with_local_recorder(&*self.recorder, || {
            ::metrics::counter!(ANONYMOUS_REFUSALS, "status" => refusal.label()).increment(1);
        });
    }

    /// Sets the gauges of a connection pool's state as it is now, for a scrape: the most
    /// connections it opens, those open, those idle, and the callers waiting for one.
    pub fn set_pool_status(&self, max_size: usize, size: usize, available: usize, waiting: usize) {
        let gauges = [
            ("db_pool_max_size", max_size),
            ("db_pool_size", size),
            ("db_pool_available", available),
            ("db_pool_waiting", waiting),
        ];
        ::metrics::with_local_recorder(&*self.recorder, || {
            for (name, value) in gauges {
                ::metrics::gauge!(name).set(value as f64);
            }
        });
    }

    /// Sets the gauges of the connections reads share: how many there are meant to be, and
    /// how many are open and usable now, for a scrape.
    pub fn set_shared_connections(&self, (configured, open): (usize, usize)) {
        ::metrics::with_local_recorder(&*self.recorder, || {
            ::metrics::gauge!("db_shared_connections").set(configured as f64);
            ::metrics::gauge!("db_shared_connections_open").set(open as f64);
        });
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains recorded histogram samples into their buckets every few seconds, until the task
    /// is aborted: without a scrape they would pile up in memory.
    pub fn spawn_upkeep(&self) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        })
    }
}

/// Counts one in a gauge while it lives: a request in [`ACTIVE_REQUESTS`], a waiting reader
/// in [`FEED_WAITING_READERS`].
pub struct CountedWhileAlive(Gauge);

impl CountedWhileAlive {
    fn start(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for CountedWhileAlive {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts a change feed reader in [`FEED_WAITING_READERS`] until the returned guard is
/// dropped (its wait ended, or its client went away). In the registry of the request's app.
pub fn feed_reader_waits() -> CountedWhileAlive {
    CountedWhileAlive::start(::metrics::gauge!(FEED_WAITING_READERS))
}

/// The method label: the method's name when it is one of HTTP's, else `_OTHER`, as the
/// OpenTelemetry conventions say, so invented methods cannot make series.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("_OTHER")
}

/// The help text of every series.
fn describe() {
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP requests, by method, route template and status code."
    );
    describe_gauge!(ACTIVE_REQUESTS, "HTTP requests being served now.");
    describe_gauge!(
        FEED_WAITING_READERS,
        "Change feed reads waiting for events now (wait > 0)."
    );
    describe_counter!(
        FEED_READS,
        "Reads of the change feed from the database, by kind: first (a request's own), woken (one for the readers woken together at a cursor)."
    );
    describe_counter!(
        FEED_WAITS_CUT_SHORT,
        "Change feed reads answered with no events before their wait was up, by reason: per_key, per_instance (a bound on waiting readers), connection_cap, shutdown."
    );
    describe_gauge!(
        "db_pool_max_size",
        "Connections the database pool may open."
    );
    describe_gauge!("db_pool_size", "Connections the database pool holds now.");
    describe_gauge!("db_pool_available", "Pooled connections idle now.");
    describe_gauge!(
        "db_pool_waiting",
        "Requests waiting for a pooled connection now."
    );
    describe_gauge!(
        "db_shared_connections",
        "Connections that small reads share, as configured."
    );
    describe_gauge!(
        "db_shared_connections_open",
        "Shared connections open and usable now (reads use pooled ones while none is)."
    );
    describe_counter!(
        DATABASE_ERRORS,
        "Database errors, by kind: timed_out, unavailable, contention, other."
    );
    describe_counter!(TIME_CONFLICTS, "Order writes refused by the 3-hour rule.");
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        "Creates answered with the first answer to their Idempotency-Key."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Refused credentials, by reason: missing, malformed, unknown, forbidden, keys_unavailable."
    );
    describe_counter!(
        ANONYMOUS_REFUSALS,
        "Requests refused without a valid key, by status: 401, 404 (no such path), 405; their log lines are sampled."
    );
}

/// Installs, once per process, the global recorder that hands each event to the registry of
/// the task's app; events outside any app's scope (start-up, commands) are dropped.
fn install_dispatch() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Fails only if another recorder was installed first, which nothing here does.
        let _ = ::metrics::set_global_recorder(Dispatch);
    });
}

struct Dispatch;

impl Dispatch {
    fn current<T>(&self, record: impl FnOnce(&PrometheusRecorder) -> T) -> Option<T> {
        CURRENT.try_with(|recorder| record(recorder)).ok()
    }
}

impl Recorder for Dispatch {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.current(|recorder| recorder.describe_counter(key, unit, description));
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.current(|recorder| recorder.describe_gauge(key, unit, description));
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.current(|recorder| recorder.describe_histogram(key, unit, description));
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.current(|recorder| recorder.register_counter(key, metadata))
            .unwrap_or_else(Counter::noop)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.current(|recorder| recorder.register_gauge(key, metadata))
            .unwrap_or_else(Gauge::noop)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.current(|recorder| recorder.register_histogram(key, metadata))
            .unwrap_or_else(Histogram::noop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_registry_counts_only_what_happens_in_its_scope() {
        let (first, second) = (Metrics::new(), Metrics::new());
        first.scope(async { AuthFailure::Missing.count() }).await;
        second
            .scope(async {
                AuthFailure::Forbidden.count();
                AuthFailure::Forbidden.count();
            })
            .await;
        // Outside any scope: counted nowhere.
        AuthFailure::Missing.count();

        assert!(
            first
                .render()
                .contains("auth_failures_total{reason=\"missing\"} 1\n"),
            "{}",
            first.render()
        );
        assert!(!first.render().contains("reason=\"forbidden\""));
        assert!(
            second
                .render()
                .contains("auth_failures_total{reason=\"forbidden\"} 2\n")
        );
        assert!(!second.render().contains("reason=\"missing\""));
    }

    #[test]
    fn methods_outside_http_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PROPFIND"), "_OTHER");
        assert_eq!(method_label("get"), "_OTHER");
    }
}
