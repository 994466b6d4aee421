//! Turns every error the framework raises (a body that is not JSON or not what the operation
//! takes, a malformed parameter, an unknown route, a method the path has not) into the API's
//! problem+json, worded for the caller; the operations' own errors are answers already and
//! pass as they are.

use poem::{
    Endpoint, IntoResponse, Request, Response,
    error::{MethodNotAllowedError, NotFoundError, ParsePathError},
};
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError,
};

use super::Stage;
use crate::{
    http::{
        idempotency::IDEMPOTENCY_KEY,
        input::FIELD_ERROR_MARKER,
        problem::{ApiError, ErrorCode, error_chain},
        routes::MatchedRoute,
    },
    telemetry::bounded::Bounded,
};

/// What the server says of an empty `If-Match`, which the spec refuses with `minLength: 1`.
pub const EMPTY_IF_MATCH: &str = "must not be empty";

#[derive(Clone)]
pub struct FrameworkErrors;

impl Stage for FrameworkErrors {
    async fn handle<E: Endpoint>(&self, request: Request, next: &E) -> Response {
        let path = request.uri().path().to_owned();
        let route = request
            .extensions()
            .get::<MatchedRoute>()
            .cloned()
            .unwrap_or_default();
        // The router's future is boxed, once: nested in place in every stage's, it made one
        // state machine so large that building it, unoptimised, overflowed a test thread's
        // stack.
        match Box::pin(next.call(request)).await {
            Ok(response) => response.into_response(),
            Err(error) if error.is_from_response() => error.into_response(),
            Err(error) => to_api_error(&error, &path, &route).into_response(),
        }
    }
}

/// Maps an error the framework raised (not one of our typed responses) to the API's own.
fn to_api_error(error: &poem::Error, path: &str, route: &MatchedRoute) -> ApiError {
    if let Some(payload) = error.downcast_ref::<ParseRequestPayloadError>() {
        return match payload.reason.split_once(FIELD_ERROR_MARKER) {
            Some((_, detail)) => ApiError::with_detail(ErrorCode::InvalidBody, detail),
            None => ApiError::not_json(&payload.reason),
        };
    }
    if error.is::<AuthorizationError>() {
        return ApiError::new(ErrorCode::Unauthenticated);
    }
    if error.is::<ContentTypeError>() {
        return ApiError::new(ErrorCode::UnsupportedMediaType);
    }
    if let Some(param) = error.downcast_ref::<ParseParamError>() {
        // The spec's pattern refused it; say what a key is, not which pattern failed.
        if param.name == IDEMPOTENCY_KEY {
            return ApiError::invalid_idempotency_key();
        }
        let problem = parameter_problem(&param.reason);
        let detail = format!("{}: {problem}", param.name);
        return ApiError::with_detail(ErrorCode::InvalidParameter, detail);
    }
    // A path segment that does not decode to text (`/orders/%ff`) names no resource: no id
    // the server assigns is such a segment.
    if error.is::<NotFoundError>() || error.is::<ParsePathError>() {
        return ApiError::nothing_at(path);
    }
    if error.is::<MethodNotAllowedError>()
        && let Some(route) = &route.0
    {
        return ApiError::method_not_allowed(route.allow());
    }
    if error.status().is_client_error() {
        let status = error.status().as_u16();
        // The framework's words may quote what the caller sent, at any length.
        let error = error.to_string();
        tracing::warn!(error = %Bounded::text(&error), status, "unmapped client error");
        return ApiError::with_detail(ErrorCode::InvalidParameter, error);
    }
    tracing::error!(error = %error_chain(error), "unhandled error");
    ApiError::new(ErrorCode::Internal)
}

/// The reason a parameter was refused, without the framework's wording around it:
/// poem-openapi writes `failed to parse "<type name>": <problem>`, and adds
/// ` (occurred while parsing "<type name>")` when the parameter is optional. Type names mean
/// nothing to a caller; integer types' own problems are their parser's words, replaced too.
fn parameter_problem(reason: &str) -> String {
    if reason.starts_with("failed to parse \"integer_") {
        return "must be an integer".to_owned();
    }
    // poem-openapi's words for a required parameter that is absent: `Type "<name>" expects an
    // input value.`
    if reason.starts_with("Type \"") && reason.ends_with("\" expects an input value.") {
        return "is required".to_owned();
    }
    // The only length rule on a parameter is `If-Match`'s `minLength: 1`.
    if reason.ends_with("verification failed. minLength(1)") {
        return EMPTY_IF_MATCH.to_owned();
    }
    let problem = match reason.split_once("\": ") {
        Some((prefix, problem)) if prefix.starts_with("failed to parse \"") => problem,
        _ => reason,
    };
    let problem = match problem.rsplit_once(" (occurred while parsing \"") {
        Some((problem, _type_name)) => problem,
        None => problem,
    };
    problem.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_problems_lose_the_framework_wording() {
        assert_eq!(
            parameter_problem(
                "failed to parse \"PageSize\": must be at least 1 (occurred while parsing \"optional_PageSize\")"
            ),
            "must be at least 1"
        );
        assert_eq!(
            parameter_problem("failed to parse \"Timestamp\": must be an RFC 3339 date-time"),
            "must be an RFC 3339 date-time"
        );
        assert_eq!(
            parameter_problem("failed to parse \"integer_int64\": invalid digit found in string"),
            "must be an integer"
        );
        assert_eq!(
            parameter_problem("Type \"Timestamp\" expects an input value."),
            "is required"
        );
        assert_eq!(
            parameter_problem("failed to parse \"string\": verification failed. minLength(1)"),
            "must not be empty"
        );
    }
}
