//! How each operation documents its errors in the spec: only the statuses it can return, and
//! for each the problem codes (from the table in [`super::codes`]) with their meanings.
//!
//! Nothing here decides what a request returns; it only describes it. An operation returns
//! `Result<Success, OperationError<Codes>>`, where `Codes` (declared with
//! [`operation_codes!`](crate::http::problem::documentation::operation_codes)) lists the codes
//! it can return; at run time any [`ApiError`] passes through.

use std::{
    collections::HashSet,
    marker::PhantomData,
    sync::{LazyLock, Mutex, PoisonError},
};

use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    registry::{MetaResponses, Registry},
};

use super::{ApiError, ErrorCode, Problem, RETRY_AFTER_SECONDS};
use crate::http::json_body::JsonBody;

/// The request id in example problem bodies.
pub const EXAMPLE_REQUEST_ID: &str = "2f1c0a57-6b1e-4d0c-9a55-0d6f3c1f5a10";

/// The error responses, one per status. poem-openapi derives their spec entries from this enum;
/// [`OperationError`] keeps, per operation, the ones its codes come with.
#[derive(ApiResponse)]
pub enum ProblemResponse {
    /// The request is malformed; nothing was changed.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(JsonBody<Problem>),
    /// No current API key was sent; nothing was changed.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(
        JsonBody<Problem>,
        /// How to authenticate: `Bearer`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The API key may not do this; nothing was changed.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(JsonBody<Problem>),
    /// No such resource.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(JsonBody<Problem>),
    /// The path does not accept this method.
    #[oai(status = 405, content_type = "application/problem+json")]
    MethodNotAllowed(
        JsonBody<Problem>,
        /// The methods the path accepts.
        #[oai(header = "Allow")]
        String,
    ),
    /// The request conflicts with the current state; nothing was changed.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(
        JsonBody<Problem>,
        /// With `IDEMPOTENCY_KEY_IN_USE`: seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        Option<u32>,
    ),
    /// What was asked for is no longer kept.
    #[oai(status = 410, content_type = "application/problem+json")]
    Gone(JsonBody<Problem>),
    /// The resource changed since the caller read it; nothing was changed.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(JsonBody<Problem>),
    /// The body is too large; nothing was changed.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(JsonBody<Problem>),
    /// The body is not JSON by its declared media type; nothing was changed.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(JsonBody<Problem>),
    /// The body is well-formed but refers to what does not exist; nothing was changed.
    #[oai(status = 422, content_type = "application/problem+json")]
    UnprocessableEntity(JsonBody<Problem>),
    /// The API key sent more requests than its rate limit allows; nothing was changed.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(
        JsonBody<Problem>,
        /// Seconds to wait before retrying: until the key may send again.
        #[oai(header = "Retry-After")]
        u32,
    ),
    /// A fault on the server's side.
    #[oai(status = 500, content_type = "application/problem+json")]
    InternalServerError(JsonBody<Problem>),
    /// The service cannot complete the request now; nothing was changed. Retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    ServiceUnavailable(
        JsonBody<Problem>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u32,
    ),
}

impl ProblemResponse {
    /// The response that carries `problem`, chosen by its status (which the code table set).
    /// `allow` is the `Allow` header of a 405; `retry_after`, the `Retry-After` of a 409 or a
    /// 429, or of a 503 whose wait is not the usual one.
    pub fn for_status(problem: &Problem, allow: String, retry_after: Option<u32>) -> Self {
        let status = problem.status;
        let problem = JsonBody::new(problem);
        match status {
            400 => Self::BadRequest(problem),
            401 => Self::Unauthorized(problem, "Bearer".to_owned()),
            403 => Self::Forbidden(problem),
            404 => Self::NotFound(problem),
            405 => Self::MethodNotAllowed(problem, allow),
            409 => Self::Conflict(problem, retry_after),
            410 => Self::Gone(problem),
            412 => Self::PreconditionFailed(problem),
            413 => Self::PayloadTooLarge(problem),
            415 => Self::UnsupportedMediaType(problem),
            422 => Self::UnprocessableEntity(problem),
            429 => Self::TooManyRequests(problem, retry_after.unwrap_or(1)),
            503 => Self::ServiceUnavailable(problem, retry_after.unwrap_or(RETRY_AFTER_SECONDS)),
            // 500, and any status a new code brings before it has a variant here (the test
            // below fails until it has).
            _ => Self::InternalServerError(problem),
        }
    }
}

/// The problem codes one operation can return; its spec entry documents them, and only the
/// statuses they come with.
pub trait OperationCodes: Send + Sync + 'static {
    const CODES: &'static [ErrorCode];
}

/// An operation's error: any [`ApiError`] at run time, documented in the spec as only the
/// codes `C` lists.
pub struct OperationError<C>(pub ApiError, PhantomData<C>);

impl<C, E: Into<ApiError>> From<E> for OperationError<C> {
    fn from(error: E) -> Self {
        Self(error.into(), PhantomData)
    }
}

impl<C: OperationCodes> ApiResponse for OperationError<C> {
    fn meta() -> MetaResponses {
        let mut meta = ProblemResponse::meta();
        meta.responses.retain_mut(|response| {
            let codes: Vec<ErrorCode> = C::CODES
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

impl<C: Send> IntoResponse for OperationError<C> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<C: Send> From<OperationError<C>> for poem::Error {
    fn from(error: OperationError<C>) -> Self {
        poem::Error::from_response(error.into_response())
    }
}

/// A response's description followed by the problem codes it comes with, one per line, as
/// `` - `CODE`: meaning. ``; the published spec adds an example body for each code it finds so.
pub fn describe_codes(summary: &str, codes: &[ErrorCode]) -> String {
    let mut text = format!("{summary}\n\nThe problem `code` is one of:");
    for code in codes {
        text.push_str(&format!(
            "\n- `{}`: {}.",
            code.as_str(),
            code.info().meaning
        ));
    }
    text
}

/// The codes a response description written by [`describe_codes`] lists.
pub fn described_codes(description: &str) -> Vec<ErrorCode> {
    ErrorCode::ALL
        .iter()
        .copied()
        .filter(|code| description.contains(&format!("\n- `{}`:", code.as_str())))
        .collect()
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

/// Declares the problem codes an operation can return, for [`OperationError`].
macro_rules! operation_codes {
    ($($(#[$doc:meta])* $name:ident = [$($code:ident),+ $(,)?];)+) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl $crate::http::problem::documentation::OperationCodes for $name {
                const CODES: &'static [$crate::http::problem::ErrorCode] =
                    &[$($crate::http::problem::ErrorCode::$code),+];
            }
        )+
    };
}
pub(crate) use operation_codes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_in_the_code_table_has_its_own_documented_response() {
        let documented: Vec<u16> = ProblemResponse::meta()
            .responses
            .iter()
            .filter_map(|response| response.status)
            .collect();
        for code in ErrorCode::ALL {
            assert!(
                documented.contains(&code.status()),
                "{code:?}: add a ProblemResponse variant for {}",
                code.status()
            );
        }
    }

    #[test]
    fn a_description_lists_its_codes_and_they_read_back() {
        let codes = [ErrorCode::OrderTimeConflict, ErrorCode::ServiceInUse];
        let description = describe_codes("Conflict.", &codes);
        assert!(
            description.starts_with(
                "Conflict.\n\nThe problem `code` is one of:\n- `ORDER_TIME_CONFLICT`: "
            )
        );
        assert_eq!(described_codes(&description), codes);
    }
}
