//! `/healthz` and `/readyz`, for load balancers and orchestrators, and `/metrics`, for
//! Prometheus.

use poem::{IntoResponse, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, PlainText},
};

use super::{
    ApiTags,
    problem::{
        ApiError, ErrorCode,
        documentation::{OperationError, operation_codes},
        error_chain,
    },
};
use crate::{
    app::{self, AppState},
    domain::PoolStatus,
};

/// A health report.
#[derive(Debug, Clone, Object)]
pub struct HealthStatus {
    /// Always `ok` when the check passes.
    pub status: String,
    /// Readiness only: how full this instance's pool of database connections was when the
    /// database answered.
    #[oai(skip_serializing_if_is_none)]
    pub pool: Option<PoolReport>,
}

/// How full an instance's pool of database connections is. Every connection in use and
/// callers waiting (`available` 0, `waiting` above 0) means this instance is busy, not that
/// the database is unreachable: readiness asks the database on a connection of its own.
#[derive(Debug, Clone, Object)]
pub struct PoolReport {
    /// The most connections the pool opens.
    pub max_size: u64,
    /// Connections open now, idle or in use.
    pub size: u64,
    /// Open connections that are idle.
    pub available: u64,
    /// Operations waiting for a connection.
    pub waiting: u64,
}

impl From<PoolStatus> for PoolReport {
    fn from(status: PoolStatus) -> Self {
        let count = |n: usize| n as u64;
        Self {
            max_size: count(status.max_size),
            size: count(status.size),
            available: count(status.available),
            waiting: count(status.waiting),
        }
    }
}

#[derive(ApiResponse)]
enum Healthy {
    /// The check passed.
    #[oai(status = 200)]
    Ok(Json<HealthStatus>),
}

impl Healthy {
    fn ok(pool: Option<PoolReport>) -> Self {
        Self::Ok(Json(HealthStatus {
            status: "ok".to_owned(),
            pool,
        }))
    }
}

#[derive(ApiResponse)]
enum MetricsText {
    /// The metrics in Prometheus' text exposition format (version 0.0.4).
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Ok(PlainText<String>),
}

operation_codes! {
    ReadyErrors = [DatabaseUnavailable, DatabaseTimeout, ShuttingDown];
    MetricsErrors = [NotFound];
}

/// The metrics as they are now, as `/metrics` answers them wherever it is served: read at the
/// moment of the scrape, so the gauges are never stale.
fn metrics_now(state: &AppState) -> MetricsText {
    MetricsText::Ok(PlainText(app::metrics_text(state)))
}

/// [`metrics_now`], for the listener that serves only the metrics.
pub(super) fn metrics_response(state: &AppState) -> poem::Response {
    metrics_now(state).into_response()
}

/// The probes. They hold no state: readiness is handed the [`AppState`] by poem.
pub struct HealthApi;

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// The process is up and serving. Touches no database.
    #[oai(path = "/healthz", method = "get", operation_id = "health_live")]
    async fn health_live(&self) -> Healthy {
        Healthy::ok(None)
    }

    /// Readiness
    ///
    /// The database answers, asked on a connection of readiness's own (not one of the serving
    /// pool's) and within 1 s; the body then also reports how full the serving pool is, so a
    /// busy instance is told apart from an unreachable database. Otherwise 503 with
    /// `Retry-After`: `DATABASE_UNAVAILABLE` when the database cannot be reached,
    /// `DATABASE_TIMEOUT` when it is there but does not answer within 1 s;
    /// `SHUTTING_DOWN` from the moment the instance begins to shut down.
    #[oai(path = "/readyz", method = "get", operation_id = "health_ready")]
    async fn health_ready(
        &self,
        state: Data<&AppState>,
    ) -> Result<Healthy, OperationError<ReadyErrors>> {
        if state.draining.is_draining() {
            return Err(ApiError::new(ErrorCode::ShuttingDown).into());
        }
        match app::ready(&state).await {
            Ok(pool) => Ok(Healthy::ok(Some(pool.into()))),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "not ready");
                // Which it is: the database gone, or there but not answering in time.
                let code = match error {
                    app::AppError::TimedOut(_) => ErrorCode::DatabaseTimeout,
                    _ => ErrorCode::DatabaseUnavailable,
                };
                Err(ApiError::new(code).into())
            }
        }
    }

    /// Metrics
    ///
    /// This instance's metrics, for Prometheus to scrape: request durations by method, route
    /// template and status (`http_server_request_duration_seconds`), requests in flight, the
    /// database pool's connections, database errors by kind, 3-hour-rule conflicts, idempotent
    /// replays and refused credentials by reason. Every label takes one of a fixed set of
    /// values. Needs no API key, like the probes: it tells nothing of any order or caller. An
    /// instance whose operators serve the metrics on an address of their own
    /// (`ORDERS_METRICS_BIND`) has nothing here: 404 `NOT_FOUND`.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics_view")]
    async fn metrics_view(
        &self,
        state: Data<&AppState>,
    ) -> Result<MetricsText, OperationError<MetricsErrors>> {
        if state.metrics_served_apart {
            // As an unknown path is answered: the API's port says nothing of the metrics.
            return Err(
                ApiError::with_detail(ErrorCode::NotFound, "there is nothing at /metrics").into(),
            );
        }
        Ok(metrics_now(&state))
    }
}
