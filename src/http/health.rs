//! `/healthz` and `/readyz`: for load balancers and orchestrators.

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

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

operation_codes! {
    ReadyErrors = [DatabaseUnavailable, DatabaseTimeout, ShuttingDown];
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
    /// cannot be reached, `DATABASE_TIMEOUT` when it is there but does not answer in time,
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
}
