//! A handler's panic is answered like any other fault: 500 problem+json with the request's id,
//! its message in the log; the process and the connection go on serving. Inside the other
//! stages, so that its answer is logged and carries the request id too.

use poem::{IntoResponse, Response};

use crate::http::problem::{ApiError, ErrorCode};

/// What a handler's panic is answered with: a 500 like any other fault, logged with the
/// panic's message. The process and the connection go on serving.
pub fn answer(panic: Box<dyn std::any::Any + Send>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_owned());
    tracing::error!(panic = %message, "a handler panicked");
    ApiError::new(ErrorCode::Internal).into_response()
}
