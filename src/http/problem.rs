//! Errors as the API shows them: RFC 9457 `application/problem+json`, one shape for every
//! error from every layer.
//!
//! [`ApiError`] is the HTTP layer's one error enum. Each variant's doc names its status and
//! its stable `code`; the README's status-code table lists the same. Storage errors are mapped
//! to it once, in `From<StoreError>`; framework errors (bad JSON, unknown route, ...) are
//! mapped once, in the edge middleware. Server-side failures are logged with their cause and
//! shown to the caller without it.

use std::{
    collections::HashSet,
    marker::PhantomData,
    sync::{LazyLock, Mutex, PoisonError},
};

use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse, Object,
    payload::Json,
    registry::{MetaResponses, Registry},
    types::Example,
};

use super::input::FieldError;
use crate::{
    domain::{MoneyError, OrderId, ServiceId, ServiceNameError},
    storage::StoreError,
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
        .to_problem("2f1c0a57-6b1e-4d0c-9a55-0d6f3c1f5a10".to_owned())
    }
}

/// Every error the API can return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400 `MALFORMED_JSON`: the body is not JSON at all.
    MalformedJson(String),
    /// 400 `INVALID_BODY`: the body is JSON but not what the operation accepts; names the field.
    InvalidBody(String),
    /// 400 `INVALID_PARAMETER`: a query parameter or header is malformed; names it.
    InvalidParameter(String),
    /// 404 `NOT_FOUND`: no such order or service (or no such route).
    NotFound(String),
    /// 405 `METHOD_NOT_ALLOWED`: the path exists but not with this method; `Allow` lists those it has.
    MethodNotAllowed { allow: String },
    /// 409 `ORDER_TIME_CONFLICT`: the order's time is less than 3 hours from another order's.
    OrderTimeConflict {
        conflicting_order_id: Option<OrderId>,
    },
    /// 409 `SERVICE_NAME_TAKEN`: another service has that name (ignoring case).
    ServiceNameTaken,
    /// 409 `SERVICE_IN_USE`: the service cannot be deleted while an order books it.
    ServiceInUse,
    /// 412 `PRECONDITION_FAILED`: `If-Match` names no current version; nothing was changed.
    PreconditionFailed,
    /// 413 `PAYLOAD_TOO_LARGE`: the body is over the limit.
    PayloadTooLarge { limit_bytes: usize },
    /// 415 `UNSUPPORTED_MEDIA_TYPE`: the body is not declared as `application/json`.
    UnsupportedMediaType(String),
    /// 422 `UNKNOWN_SERVICE`: a well-formed order names services that do not exist.
    UnknownServices(Vec<String>),
    /// 500 `INTERNAL`: a fault on the server's side; the log has the cause, the body does not.
    Internal,
    /// 503 `DATABASE_UNAVAILABLE`: the database cannot be reached; retry after `Retry-After` seconds.
    Unavailable,
    /// 503 `CONTENDED`: concurrent writes kept aborting this one, even after retries; nothing
    /// was changed; retry after `Retry-After` seconds.
    Contended,
}

/// How long a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// A problem's stable `code`: what a program branches on. Each code has one status; the
/// spec lists, per operation and status, the codes that operation can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedJson,
    InvalidBody,
    InvalidParameter,
    NotFound,
    MethodNotAllowed,
    OrderTimeConflict,
    ServiceNameTaken,
    ServiceInUse,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnknownService,
    Internal,
    DatabaseUnavailable,
    Contended,
}

impl ErrorCode {
    pub const ALL: [Self; 15] = [
        Self::MalformedJson,
        Self::InvalidBody,
        Self::InvalidParameter,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::OrderTimeConflict,
        Self::ServiceNameTaken,
        Self::ServiceInUse,
        Self::PreconditionFailed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::UnknownService,
        Self::Internal,
        Self::DatabaseUnavailable,
        Self::Contended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "MALFORMED_JSON",
            Self::InvalidBody => "INVALID_BODY",
            Self::InvalidParameter => "INVALID_PARAMETER",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::OrderTimeConflict => "ORDER_TIME_CONFLICT",
            Self::ServiceNameTaken => "SERVICE_NAME_TAKEN",
            Self::ServiceInUse => "SERVICE_IN_USE",
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::UnknownService => "UNKNOWN_SERVICE",
            Self::Internal => "INTERNAL",
            Self::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Self::Contended => "CONTENDED",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::MalformedJson | Self::InvalidBody | Self::InvalidParameter => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::OrderTimeConflict | Self::ServiceNameTaken | Self::ServiceInUse => 409,
            Self::PreconditionFailed => 412,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::UnknownService => 422,
            Self::Internal => 500,
            Self::DatabaseUnavailable | Self::Contended => 503,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "Malformed JSON",
            Self::InvalidBody => "Invalid request body",
            Self::InvalidParameter => "Invalid parameter",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::OrderTimeConflict => "Order time conflict",
            Self::ServiceNameTaken => "Service name taken",
            Self::ServiceInUse => "Service in use",
            Self::PreconditionFailed => "Precondition failed",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::UnknownService => "Unknown service",
            Self::Internal => "Internal server error",
            Self::DatabaseUnavailable => "Database unavailable",
            Self::Contended => "Too much contention",
        }
    }

    /// When the code is returned, for the spec's description of each error response.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::MalformedJson => "the body is not JSON at all",
            Self::InvalidBody => {
                "the body is JSON but not what the operation accepts; `detail` names the field"
            }
            Self::InvalidParameter => {
                "a query parameter is malformed or out of range; `detail` names it"
            }
            Self::NotFound => {
                "no resource has this id (any id the server did not assign, whatever its form)"
            }
            Self::MethodNotAllowed => {
                "the path does not accept this method; `Allow` lists those it does"
            }
            Self::OrderTimeConflict => {
                "another order is less than 3 hours away; `conflicting_order_id` names it"
            }
            Self::ServiceNameTaken => "another service has this name, ignoring case",
            Self::ServiceInUse => "an order books the service; change or delete those orders first",
            Self::PreconditionFailed => {
                "`If-Match` matches no current `ETag`: the resource changed since it was read"
            }
            Self::PayloadTooLarge => "the body is larger than 64 KiB",
            Self::UnsupportedMediaType => "the body is not declared as `application/json`",
            Self::UnknownService => {
                "the body names services that do not exist; `unknown_service_ids` lists them"
            }
            Self::Internal => {
                "a fault on the server's side; the log has the cause, keyed by `request_id`"
            }
            Self::DatabaseUnavailable => {
                "the database cannot be reached; retry after `Retry-After` seconds"
            }
            Self::Contended => {
                "concurrent writes kept aborting this one; retry after `Retry-After` seconds"
            }
        }
    }

    /// A typical error with this code from an operation on `resource` (`order`, `service`),
    /// for the spec's examples: built as the server builds it, so its text is the server's.
    pub fn example(self, resource: &str) -> ApiError {
        match self {
            Self::MalformedJson => ApiError::not_json("expected value at line 1 column 1"),
            Self::InvalidBody if resource == "service" => {
                ApiError::InvalidBody(FieldError::new("name", ServiceNameError::Empty).to_string())
            }
            Self::InvalidBody => ApiError::InvalidBody(
                FieldError::new("totalfee", MoneyError::TooPrecise).to_string(),
            ),
            Self::InvalidParameter => {
                ApiError::InvalidParameter("page_size: must be at least 1".to_owned())
            }
            Self::NotFound => ApiError::not_found(resource, "999"),
            Self::MethodNotAllowed => ApiError::MethodNotAllowed {
                allow: "POST, GET, HEAD".to_owned(),
            },
            Self::OrderTimeConflict => ApiError::OrderTimeConflict {
                conflicting_order_id: Some(OrderId::from_db(223)),
            },
            Self::ServiceNameTaken => ApiError::ServiceNameTaken,
            Self::ServiceInUse => ApiError::ServiceInUse,
            Self::PreconditionFailed => ApiError::PreconditionFailed,
            Self::PayloadTooLarge => ApiError::PayloadTooLarge {
                limit_bytes: crate::http::edge::MAX_BODY_BYTES,
            },
            Self::UnsupportedMediaType => ApiError::unsupported_media_type(),
            Self::UnknownService => ApiError::UnknownServices(vec!["999".to_owned()]),
            Self::Internal => ApiError::Internal,
            Self::DatabaseUnavailable => ApiError::Unavailable,
            Self::Contended => ApiError::Contended,
        }
    }
}

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
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::UnknownServices(_) => ErrorCode::UnknownService,
            Self::Internal => ErrorCode::Internal,
            Self::Unavailable => ErrorCode::DatabaseUnavailable,
            Self::Contended => ErrorCode::Contended,
        }
    }

    pub fn status(&self) -> u16 {
        self.code().status()
    }

    fn detail(&self) -> String {
        match self {
            Self::MalformedJson(detail)
            | Self::InvalidBody(detail)
            | Self::InvalidParameter(detail)
            | Self::NotFound(detail)
            | Self::UnsupportedMediaType(detail) => detail.clone(),
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
            Self::PayloadTooLarge { limit_bytes } => {
                format!("the request body must be at most {limit_bytes} bytes")
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
        let code = self.code();
        Problem {
            problem_type: format!(
                "urn:problem-type:orders:{}",
                code.as_str().to_ascii_lowercase().replace('_', "-")
            ),
            title: code.title().to_owned(),
            status: code.status(),
            detail: self.detail(),
            code: code.as_str().to_owned(),
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

    /// The response for this error, carrying the current request's id.
    pub fn into_problem_response(self) -> ProblemResponse {
        let request_id = REQUEST_ID
            .try_with(Clone::clone)
            .unwrap_or_else(|_| "unknown".to_owned());
        let problem = Json(self.to_problem(request_id));
        match self {
            Self::MalformedJson(_) | Self::InvalidBody(_) | Self::InvalidParameter(_) => {
                ProblemResponse::BadRequest(problem)
            }
            Self::NotFound(_) => ProblemResponse::NotFound(problem),
            Self::MethodNotAllowed { allow } => ProblemResponse::MethodNotAllowed(problem, allow),
            Self::OrderTimeConflict { .. } | Self::ServiceNameTaken | Self::ServiceInUse => {
                ProblemResponse::Conflict(problem)
            }
            Self::PreconditionFailed => ProblemResponse::PreconditionFailed(problem),
            Self::PayloadTooLarge { .. } => ProblemResponse::PayloadTooLarge(problem),
            Self::UnsupportedMediaType(_) => ProblemResponse::UnsupportedMediaType(problem),
            Self::UnknownServices(_) => ProblemResponse::UnprocessableEntity(problem),
            Self::Internal => ProblemResponse::InternalServerError(problem),
            Self::Unavailable | Self::Contended => {
                ProblemResponse::ServiceUnavailable(problem, RETRY_AFTER_SECONDS)
            }
        }
    }
}

impl ApiError {
    /// A 400 for a body that does not parse as JSON, for the parser's `reason`.
    pub fn not_json(reason: impl std::fmt::Display) -> Self {
        Self::MalformedJson(format!("the request body is not valid JSON: {reason}"))
    }

    /// A 415 for a body not declared as `application/json`.
    pub fn unsupported_media_type() -> Self {
        Self::UnsupportedMediaType(
            "the request body must be JSON, sent with Content-Type: application/json".to_owned(),
        )
    }

    /// A 404 saying which `resource` ("order", "service") has no such `id`.
    pub fn not_found(resource: &str, id: &str) -> Self {
        Self::NotFound(format!("no {resource} has the id {id:?}"))
    }
}

/// Maps storage's "no such record" to a 404 naming the `resource` and `id` asked for, and any
/// other storage error as usual.
pub fn not_found_as<'a>(
    resource: &'a str,
    id: &'a str,
) -> impl FnOnce(StoreError) -> ApiError + 'a {
    move |error| match error {
        StoreError::NotFound => ApiError::not_found(resource, id),
        other => other.into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_problem_response().into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound("no such resource".to_owned()),
            StoreError::VersionMismatch => Self::PreconditionFailed,
            StoreError::OrderTimeConflict {
                conflicting_order_id,
            } => Self::OrderTimeConflict {
                conflicting_order_id,
            },
            StoreError::ServiceNameTaken => Self::ServiceNameTaken,
            StoreError::ServiceInUse => Self::ServiceInUse,
            StoreError::UnknownServices(ids) => {
                Self::UnknownServices(ids.iter().map(ServiceId::to_string).collect())
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "database unavailable");
                Self::Unavailable
            }
            StoreError::Contention(cause) => {
                tracing::warn!(error = %error_chain(&cause), "contention persisted across retries");
                Self::Contended
            }
            StoreError::Database(cause) => {
                tracing::error!(error = %error_chain(&cause), "database error");
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

/// The documented error responses. Operations document the subset they can return, through
/// [`ApiFailure`], which also lists the problem codes each status comes with there.
#[derive(ApiResponse)]
pub enum ProblemResponse {
    /// The request is malformed; nothing was changed.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No such resource.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The path does not accept this method.
    #[oai(status = 405, content_type = "application/problem+json")]
    MethodNotAllowed(
        Json<Problem>,
        /// The methods the path accepts.
        #[oai(header = "Allow")]
        String,
    ),
    /// The request conflicts with the current state; nothing was changed.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The resource changed since the caller read it; nothing was changed.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>),
    /// The body is too large; nothing was changed.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The body is not JSON by its declared media type; nothing was changed.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The body is well-formed but refers to what does not exist; nothing was changed.
    #[oai(status = 422, content_type = "application/problem+json")]
    UnprocessableEntity(Json<Problem>),
    /// A fault on the server's side.
    #[oai(status = 500, content_type = "application/problem+json")]
    InternalServerError(Json<Problem>),
    /// The service cannot complete the request now; nothing was changed. Retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    ServiceUnavailable(
        Json<Problem>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u32,
    ),
}

/// The problem codes one operation can return; its spec entry documents them, and only the
/// statuses they come with.
pub trait DocumentedErrors: Send + Sync + 'static {
    const CODES: &'static [ErrorCode];
}

/// An operation's error: any [`ApiError`] at run time, documented as only the codes `S`
/// lists, so each operation's spec shows what it can really return.
pub struct ApiFailure<S>(pub ApiError, PhantomData<S>);

impl<S> From<ApiError> for ApiFailure<S> {
    fn from(error: ApiError) -> Self {
        Self(error, PhantomData)
    }
}

impl<S> From<StoreError> for ApiFailure<S> {
    fn from(error: StoreError) -> Self {
        Self(error.into(), PhantomData)
    }
}

impl<S: DocumentedErrors> ApiResponse for ApiFailure<S> {
    fn meta() -> MetaResponses {
        let mut meta = ProblemResponse::meta();
        meta.responses.retain_mut(|response| {
            let codes: Vec<ErrorCode> = S::CODES
                .iter()
                .copied()
                .filter(|code| Some(code.status()) == response.status)
                .collect();
            if codes.is_empty() {
                return false;
            }
            response.description = interned(describe_codes(response.description, &codes));
            true
        });
        meta
    }

    fn register(registry: &mut Registry) {
        ProblemResponse::register(registry);
    }
}

/// A response's description followed by the problem codes it comes with, one per line, as
/// `` - `CODE`: meaning ``; the published spec adds an example body for each code it finds so.
pub fn describe_codes(summary: &str, codes: &[ErrorCode]) -> String {
    let mut text = format!("{summary}\n\nThe problem `code` is one of:");
    for code in codes {
        text.push_str(&format!("\n- `{}`: {}.", code.as_str(), code.meaning()));
    }
    text
}

/// poem-openapi's descriptions are `&'static str`; each distinct one built at run time is
/// allocated once, however often the spec is built (every test builds it).
fn interned(text: String) -> &'static str {
    static SEEN: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = seen.get(text.as_str()) {
        return existing;
    }
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    seen.insert(leaked);
    leaked
}

impl<S: Send> IntoResponse for ApiFailure<S> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<S: Send> From<ApiFailure<S>> for poem::Error {
    fn from(failure: ApiFailure<S>) -> Self {
        poem::Error::from_response(failure.into_response())
    }
}

/// Declares the problem codes an operation can return, for [`ApiFailure`].
macro_rules! documented_errors {
    ($($(#[$doc:meta])* $name:ident = [$($code:ident),+ $(,)?];)+) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl $crate::http::problem::DocumentedErrors for $name {
                const CODES: &'static [$crate::http::problem::ErrorCode] =
                    &[$($crate::http::problem::ErrorCode::$code),+];
            }
        )+
    };
}
pub(crate) use documented_errors;

#[cfg(test)]
mod tests {
    use poem::http::{StatusCode, header};

    use super::*;

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
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().into_bytes().await.unwrap()).unwrap();
        assert_eq!(body["status"], 503);
        assert_eq!(body["code"], "CONTENDED");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was changed")
        );
    }

    #[test]
    fn every_code_has_the_status_its_example_error_has() {
        for code in ErrorCode::ALL {
            for resource in ["order", "service"] {
                let example = code.example(resource);
                assert_eq!(example.code(), code);
                assert_eq!(example.status(), code.status());
            }
        }
    }
}
