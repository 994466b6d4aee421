//! `/healthz` and `/readyz`, for load balancers and orchestrators, and `/metrics`, for
//! Prometheus.

use poem::web::Data;
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
use crate::app::{self, AppState};

/// A health report.
#[derive(Debug, Clone, Object)]
pub struct HealthStatus {
    /// Always `ok` when the check passes.
    pub status: String,
}

#[derive(ApiResponse)]
enum Healthy {
    /// The check passed.
    #[oai(status = 200)]
    Ok(Json<HealthStatus>),
}

impl Healthy {
    fn ok() -> Self {
        Self::Ok(Json(HealthStatus {
            status: "ok".to_owned(),
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
    ReadyErrors = [DatabaseUnavailable, DatabaseTimeout];
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
        Healthy::ok()
    }

    /// Readiness
    ///
    /// The database answers; otherwise 503 with `Retry-After`: `DATABASE_UNAVAILABLE` when it
    /// cannot be reached, `DATABASE_TIMEOUT` when it is there but does not answer in time.
    #[oai(path = "/readyz", method = "get", operation_id = "health_ready")]
    async fn health_ready(
        &self,
        state: Data<&AppState>,
    ) -> Result<Healthy, OperationError<ReadyErrors>> {
        match app::ready(&state).await {
            Ok(()) => Ok(Healthy::ok()),
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
    /// values. Needs no API key, like the probes: it tells nothing of any order or caller.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics_view")]
    async fn metrics_view(&self, state: Data<&AppState>) -> MetricsText {
        // Read at the moment of the scrape, so the gauges are never stale.
        state.metrics.set_pool_status(state.pool.status());
        MetricsText::Ok(PlainText(state.metrics.render()))
    }
}
