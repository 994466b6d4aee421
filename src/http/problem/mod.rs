//! Errors as the API shows them: RFC 9457 `application/problem+json`, one shape for every
//! error from every layer.
//!
//! [`ApiError`] is the HTTP layer's one error enum; what each code means, and its status, is
//! the table in [`codes`]. Application errors are mapped to it once, in `From<AppError>`;
//! framework errors (bad JSON, unknown route, ...) are mapped once, by the request pipeline.
//! Server-side failures are logged with their cause and shown to the caller without it.
//! How each operation documents its errors in the spec is [`documentation`]'s job.

pub mod codes;
pub mod documentation;

use poem::{IntoResponse, Response};
use poem_openapi::{Object, types::Example};
use serde::Serialize;

pub use self::codes::{
    ErrorCode, IDEMPOTENCY_RETRY_AFTER_SECONDS, MAX_BODY_BYTES, NO_ANSWER_DETAIL,
    OVERLOADED_RETRY_AFTER_SECONDS, RETRY_AFTER_SECONDS,
};
use self::documentation::ProblemResponse;
use crate::{
    app::{AppError, Resource, rate_limit::RateLimited},
    domain::{MAX_IDEMPOTENCY_KEY_CHARS, OrderId, Scope},
};

tokio::task_local! {
    /// The id of the request being served, set by the request pipeline for the whole request,
    /// so that every problem body can carry it without threading it through handlers.
    pub static REQUEST_ID: String;
}

/// An error as RFC 9457 describes it, with this API's extensions.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct Problem {
    /// A URI naming the kind of problem; stable, one per `code`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicting_order_id: Option<String>,
    /// With `UNKNOWN_SERVICE`: the service ids that name no service.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_service_ids: Option<Vec<String>>,
}

impl Example for Problem {
    fn example() -> Self {
        ApiError::order_time_conflict(Some(OrderId::from_db(223)))
            .to_problem(documentation::EXAMPLE_REQUEST_ID.to_owned())
    }
}

/// Every error the API can return: a code from the table, the `detail` for this request, and
/// what the code's extension members or headers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    /// With `ORDER_TIME_CONFLICT`.
    conflicting_order_id: Option<OrderId>,
    /// With `UNKNOWN_SERVICE`.
    unknown_service_ids: Option<Vec<String>>,
    /// With `METHOD_NOT_ALLOWED`: the `Allow` header.
    allow: Option<String>,
    /// With `IDEMPOTENCY_KEY_IN_USE`, `RATE_LIMITED` and `OVERLOADED`: the `Retry-After`
    /// header (other 503s have the usual one).
    retry_after: Option<u32>,
}

impl ApiError {
    /// An error with `code` and the table's detail for it.
    pub fn new(code: ErrorCode) -> Self {
        Self::with_detail(code, code.info().detail)
    }

    /// An error with `code` and a detail that says what is wrong with this request.
    pub fn with_detail(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            conflicting_order_id: None,
            unknown_service_ids: None,
            allow: None,
            retry_after: None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// A 400 for a body that does not parse as JSON, for the parser's `reason`.
    pub fn not_json(reason: impl std::fmt::Display) -> Self {
        let detail = format!("{}: {reason}", ErrorCode::MalformedJson.info().detail);
        Self::with_detail(ErrorCode::MalformedJson, detail)
    }

    /// A 404 saying which `resource` has no such `id`.
    pub fn not_found(resource: Resource, id: &str) -> Self {
        Self::with_detail(
            ErrorCode::NotFound,
            format!("no {resource} has the id {id:?}"),
        )
    }

    /// A 404 for a path that no route has.
    pub fn nothing_at(path: &str) -> Self {
        Self::with_detail(ErrorCode::NotFound, format!("there is nothing at {path}"))
    }

    /// A 405 for a path that accepts the methods in `allow`.
    pub fn method_not_allowed(allow: String) -> Self {
        let detail = format!(
            "{}; it accepts: {allow}",
            ErrorCode::MethodNotAllowed.info().detail
        );
        Self {
            allow: Some(allow),
            ..Self::with_detail(ErrorCode::MethodNotAllowed, detail)
        }
    }

    /// A 403 naming the scope the operation needs.
    pub fn forbidden(scope: Scope) -> Self {
        Self::with_detail(
            ErrorCode::Forbidden,
            format!("this operation needs the scope {scope}, which the API key does not have"),
        )
    }

    /// A 409 for a request whose `Idempotency-Key` another request is using now.
    pub fn idempotency_key_in_use() -> Self {
        Self {
            retry_after: Some(IDEMPOTENCY_RETRY_AFTER_SECONDS),
            ..Self::new(ErrorCode::IdempotencyKeyInUse)
        }
    }

    /// A 429 for the key `key`, naming its limit and when to retry.
    pub fn rate_limited(key: &str, refused: &RateLimited) -> Self {
        let seconds = refused.retry_after_seconds();
        let unit = if seconds == 1 { "second" } else { "seconds" };
        let detail = format!(
            "the API key {key} may send {}; nothing was changed; retry in {seconds} {unit}",
            refused.limit
        );
        Self {
            retry_after: Some(seconds),
            ..Self::with_detail(ErrorCode::RateLimited, detail)
        }
    }

    /// A 503 for a request past the most this instance works on at once.
    pub fn overloaded() -> Self {
        Self {
            retry_after: Some(OVERLOADED_RETRY_AFTER_SECONDS),
            ..Self::new(ErrorCode::Overloaded)
        }
    }

    /// A 409 naming the order that the requested time is too close to, when it is known.
    pub fn order_time_conflict(conflicting_order_id: Option<OrderId>) -> Self {
        let rule = ErrorCode::OrderTimeConflict.info().detail;
        let detail = match conflicting_order_id {
            Some(id) => format!("{rule}; order {id} is closer than that"),
            None => rule.to_owned(),
        };
        Self {
            conflicting_order_id,
            ..Self::with_detail(ErrorCode::OrderTimeConflict, detail)
        }
    }

    /// A 422 listing the service ids, as the client wrote them, that name no service.
    pub fn unknown_services(ids: Vec<String>) -> Self {
        let listed: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
        let detail = format!("services: no service has the id {}", listed.join(", "));
        Self {
            unknown_service_ids: Some(ids),
            ..Self::with_detail(ErrorCode::UnknownService, detail)
        }
    }

    /// A 400 for a change feed cursor the API never issued.
    pub fn unknown_cursor() -> Self {
        Self::with_detail(
            ErrorCode::InvalidParameter,
            "after: is not a cursor this API issued; pass `next_cursor` from a previous answer \
             unchanged, or `now`",
        )
    }

    /// A 400 for an `Idempotency-Key` header that is not one key.
    pub fn invalid_idempotency_key() -> Self {
        Self::with_detail(
            ErrorCode::InvalidParameter,
            format!(
                "Idempotency-Key: must be one header of 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable \
                 ASCII characters, bare (no spaces or quotes) or as a quoted string"
            ),
        )
    }

    pub fn to_problem(&self, request_id: String) -> Problem {
        let info = self.code.info();
        Problem {
            problem_type: info.type_uri.to_owned(),
            title: info.title.to_owned(),
            status: info.status,
            detail: self.detail.clone(),
            code: info.code.to_owned(),
            request_id,
            conflicting_order_id: self.conflicting_order_id.map(|id| id.to_string()),
            unknown_service_ids: self.unknown_service_ids.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID
            .try_with(Clone::clone)
            .unwrap_or_else(|_| "unknown".to_owned());
        let problem = self.to_problem(request_id);
        ProblemResponse::for_status(&problem, self.allow.unwrap_or_default(), self.retry_after)
            .into_response()
    }
}

impl ApiError {
    /// The error for an outcome the write decided (see `app::idempotency`), which is rendered
    /// once for the caller and once for its replays, so it is read by reference.
    pub fn from_decided(error: &AppError) -> Option<Self> {
        Some(match error {
            AppError::UnknownServices(ids) => Self::unknown_services(ids.clone()),
            AppError::OrderTimeConflict {
                conflicting_order_id,
            } => Self::order_time_conflict(*conflicting_order_id),
            AppError::ServiceNameTaken => Self::new(ErrorCode::ServiceNameTaken),
            _ => return None,
        })
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::NotFound { resource, id } => Self::not_found(resource, &id),
            AppError::InvalidServices(problem) => {
                Self::with_detail(ErrorCode::InvalidBody, format!("services: {problem}"))
            }
            AppError::UnknownServices(_)
            | AppError::OrderTimeConflict { .. }
            | AppError::ServiceNameTaken => {
                Self::from_decided(&error).expect("these are decided outcomes")
            }
            AppError::IdempotencyKeyReused => Self::new(ErrorCode::IdempotencyKeyReused),
            AppError::IdempotencyKeyInUse => Self::idempotency_key_in_use(),
            AppError::ServiceInUse => Self::new(ErrorCode::ServiceInUse),
            AppError::PreconditionFailed => Self::new(ErrorCode::PreconditionFailed),
            AppError::UnknownCursor => Self::unknown_cursor(),
            AppError::CursorExpired => Self::new(ErrorCode::CursorExpired),
            AppError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "database unavailable");
                Self::new(ErrorCode::DatabaseUnavailable)
            }
            AppError::TimedOut(ref cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "database timed out");
                if error.went_unanswered() {
                    // Cut off by us, not cancelled by the server: what was sent may still be
                    // carried out, so "nothing was changed" cannot be promised.
                    Self::with_detail(ErrorCode::DatabaseTimeout, NO_ANSWER_DETAIL)
                } else {
                    Self::new(ErrorCode::DatabaseTimeout)
                }
            }
            AppError::Contended(cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "contention persisted across retries");
                Self::new(ErrorCode::Contended)
            }
            AppError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "internal error");
                Self::new(ErrorCode::Internal)
            }
        }
    }
}

pub use crate::telemetry::error_chain;

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
        let response = ApiError::new(ErrorCode::Contended).into_response();

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
            let error = ApiError::new(*code);
            assert_eq!(error.code(), *code);

            let response = error.into_response();

            assert_eq!(response.status().as_u16(), code.status(), "{code:?}");
            let body = body_of(response).await;
            assert_eq!(body["status"], code.status(), "{code:?}");
            assert_eq!(body["code"], code.as_str(), "{code:?}");
            assert_eq!(body["title"], code.info().title, "{code:?}");
        }
    }

    /// The outcomes kept for replay (the application's list) are exactly those rendered as
    /// decided refusals (this layer's), so a kept answer is never a stand-in 500.
    #[test]
    fn the_errors_kept_for_replay_are_the_ones_rendered_as_decided() {
        let every_kind = [
            AppError::not_found(Resource::Order, "1"),
            AppError::InvalidServices(crate::domain::OrderDraftError::NoServices),
            AppError::UnknownServices(vec!["9".to_owned()]),
            AppError::OrderTimeConflict {
                conflicting_order_id: Some(OrderId::from_db(1)),
            },
            AppError::ServiceNameTaken,
            AppError::ServiceInUse,
            AppError::PreconditionFailed,
            AppError::UnknownCursor,
            AppError::CursorExpired,
            AppError::IdempotencyKeyReused,
            AppError::IdempotencyKeyInUse,
            AppError::Unavailable("down".into()),
            AppError::TimedOut("slow".into()),
            AppError::Contended("busy".into()),
            AppError::Internal("bug".into()),
        ];
        for error in every_kind {
            let outcome: Result<(), AppError> = Err(error);
            let error = outcome.as_ref().unwrap_err();
            assert_eq!(
                crate::app::idempotency::decided_by_the_write(&outcome),
                ApiError::from_decided(error).is_some(),
                "{error:?}"
            );
        }
    }
}
