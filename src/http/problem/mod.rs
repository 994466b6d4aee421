//! Errors as the API shows them: RFC 9457 `application/problem+json`, one shape for every
//! error from every layer.
//!
//! [`ApiError`] is the HTTP layer's one error enum; what each code means, and its status, is
//! the table in [`codes`]. Application errors are mapped to it once, in `From<AppError>`;
//! framework errors (bad JSON, unknown route, ...) are mapped once, in the edge middleware.
//! Server-side failures are logged with their cause and shown to the caller without it.
//! How each operation documents its errors in the spec is [`documentation`]'s job.

pub mod codes;
pub mod documentation;

use poem::{IntoResponse, Response};
use poem_openapi::{Object, payload::Json, types::Example};

pub use self::codes::{ErrorCode, MAX_BODY_BYTES};
use self::documentation::ProblemResponse;
use super::input::FieldError;
use crate::{
    app::{AppError, Resource},
    domain::OrderId,
};

tokio::task_local! {
    /// The id of the request being served, set by the edge middleware for the whole request,
    /// so that every problem body can carry it without threading it through handlers.
    pub static REQUEST_ID: String;
}

/// An error as RFC 9457 describes it, with this API's extensions.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Problem {
    /// A URI naming the kind of problem; stable, one per `code`.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, in words a caller can act on.
    pub detail: String,
    /// A stable, UPPER_SNAKE identifier of the kind of problem, for programs to branch on.
    pub code: String,
    /// The request's id, as in the `X-Request-Id` response header; quote it when reporting a problem.
    pub request_id: String,
    /// With `ORDER_TIME_CONFLICT`: the order that the requested time is too close to.
    #[oai(skip_serializing_if_is_none)]
    pub conflicting_order_id: Option<String>,
    /// With `UNKNOWN_SERVICE`: the service ids that name no service.
    #[oai(skip_serializing_if_is_none)]
    pub unknown_service_ids: Option<Vec<String>>,
}

impl Example for Problem {
    fn example() -> Self {
        ApiError::OrderTimeConflict {
            conflicting_order_id: Some(OrderId::from_db(223)),
        }
        .to_problem(documentation::EXAMPLE_REQUEST_ID.to_owned())
    }
}

/// Every error the API can return. Each variant carries what its `detail` needs; its code,
/// and so its status and title, come from [`ApiError::code`] and the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    MalformedJson(String),
    InvalidBody(String),
    InvalidParameter(String),
    NotFound(String),
    MethodNotAllowed {
        allow: String,
    },
    OrderTimeConflict {
        conflicting_order_id: Option<OrderId>,
    },
    ServiceNameTaken,
    ServiceInUse,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnknownServices(Vec<String>),
    Internal,
    Unavailable,
    Contended,
}

/// How long a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedJson(_) => ErrorCode::MalformedJson,
            Self::InvalidBody(_) => ErrorCode::InvalidBody,
            Self::InvalidParameter(_) => ErrorCode::InvalidParameter,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::OrderTimeConflict { .. } => ErrorCode::OrderTimeConflict,
            Self::ServiceNameTaken => ErrorCode::ServiceNameTaken,
            Self::ServiceInUse => ErrorCode::ServiceInUse,
            Self::PreconditionFailed => ErrorCode::PreconditionFailed,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::UnknownServices(_) => ErrorCode::UnknownService,
            Self::Internal => ErrorCode::Internal,
            Self::Unavailable => ErrorCode::DatabaseUnavailable,
            Self::Contended => ErrorCode::Contended,
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::MalformedJson(detail)
            | Self::InvalidBody(detail)
            | Self::InvalidParameter(detail)
            | Self::NotFound(detail) => detail.clone(),
            Self::MethodNotAllowed { allow } => {
                format!("this path does not accept that method; it accepts: {allow}")
            }
            Self::OrderTimeConflict {
                conflicting_order_id: Some(id),
            } => format!(
                "datetime: must be at least 3 hours away from every other order; order {id} is closer than that"
            ),
            Self::OrderTimeConflict {
                conflicting_order_id: None,
            } => "datetime: must be at least 3 hours away from every other order".to_owned(),
            Self::ServiceNameTaken => {
                "name: another service already has this name (names are compared ignoring case)"
                    .to_owned()
            }
            Self::ServiceInUse => {
                "the service is booked by at least one order; change or delete those orders first"
                    .to_owned()
            }
            Self::PreconditionFailed => {
                "If-Match does not match the current ETag; fetch the resource again and retry with its ETag"
                    .to_owned()
            }
            Self::PayloadTooLarge => {
                format!("the request body must be at most {MAX_BODY_BYTES} bytes")
            }
            Self::UnsupportedMediaType => {
                "the request body must be JSON, sent with Content-Type: application/json".to_owned()
            }
            Self::UnknownServices(ids) => format!(
                "services: no service has the id {}",
                ids.iter()
                    .map(|id| format!("{id:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Internal => "the server failed to handle the request; quote the request_id when reporting it".to_owned(),
            Self::Unavailable => {
                format!("the database cannot be reached; retry in {RETRY_AFTER_SECONDS} seconds")
            }
            Self::Contended => format!(
                "concurrent writes to the same records kept aborting this one; nothing was changed; retry in {RETRY_AFTER_SECONDS} seconds"
            ),
        }
    }

    pub fn to_problem(&self, request_id: String) -> Problem {
        let info = self.code().info();
        Problem {
            problem_type: info.type_uri.to_owned(),
            title: info.title.to_owned(),
            status: info.status,
            detail: self.detail(),
            code: info.code.to_owned(),
            request_id,
            conflicting_order_id: match self {
                Self::OrderTimeConflict {
                    conflicting_order_id,
                } => conflicting_order_id.map(|id| id.to_string()),
                _ => None,
            },
            unknown_service_ids: match self {
                Self::UnknownServices(ids) => Some(ids.clone()),
                _ => None,
            },
        }
    }

    /// A 400 for a body that does not parse as JSON, for the parser's `reason`.
    pub fn not_json(reason: impl std::fmt::Display) -> Self {
        Self::MalformedJson(format!("the request body is not valid JSON: {reason}"))
    }

    /// A 404 saying which `resource` has no such `id`.
    pub fn not_found(resource: Resource, id: &str) -> Self {
        Self::NotFound(format!("no {resource} has the id {id:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID
            .try_with(Clone::clone)
            .unwrap_or_else(|_| "unknown".to_owned());
        let problem = Json(self.to_problem(request_id));
        let allow = match self {
            Self::MethodNotAllowed { allow } => allow,
            _ => String::new(),
        };
        ProblemResponse::for_status(problem, allow).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::NotFound { resource, id } => Self::not_found(resource, &id),
            AppError::InvalidServices(problem) => {
                Self::InvalidBody(FieldError::new("services", problem).to_string())
            }
            AppError::UnknownServices(ids) => Self::UnknownServices(ids),
            AppError::OrderTimeConflict {
                conflicting_order_id,
            } => Self::OrderTimeConflict {
                conflicting_order_id,
            },
            AppError::ServiceNameTaken => Self::ServiceNameTaken,
            AppError::ServiceInUse => Self::ServiceInUse,
            AppError::PreconditionFailed => Self::PreconditionFailed,
            AppError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "database unavailable");
                Self::Unavailable
            }
            AppError::Contended(cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "contention persisted across retries");
                Self::Contended
            }
            AppError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "internal error");
                Self::Internal
            }
        }
    }
}

/// An error and all its causes on one line, for the log.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use poem::http::{StatusCode, header};

    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        serde_json::from_slice(&response.into_body().into_bytes().await.unwrap()).unwrap()
    }

    /// What a caller meets when writes keep aborting one another: the status, the wait, and
    /// a body saying nothing was changed.
    #[tokio::test]
    async fn contention_is_a_503_with_retry_after_and_a_problem_body() {
        let response = ApiError::Contended.into_response();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let headers = response.headers();
        assert_eq!(
            headers[header::RETRY_AFTER],
            RETRY_AFTER_SECONDS.to_string()
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        let body = body_of(response).await;
        assert_eq!(body["status"], 503);
        assert_eq!(body["code"], "CONTENDED");
        assert_eq!(body["type"], "urn:problem-type:orders:contended");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was changed")
        );
    }

    /// The response's status line, its body's `status` and the table agree for every code.
    #[tokio::test]
    async fn every_code_is_answered_with_the_status_the_table_gives_it() {
        for code in ErrorCode::ALL {
            let error = documentation::example_error(*code, "order_update");
            assert_eq!(error.code(), *code);

            let response = error.into_response();

            assert_eq!(response.status().as_u16(), code.status(), "{code:?}");
            let body = body_of(response).await;
            assert_eq!(body["status"], code.status(), "{code:?}");
            assert_eq!(body["code"], code.as_str(), "{code:?}");
            assert_eq!(body["title"], code.info().title, "{code:?}");
        }
    }
}
