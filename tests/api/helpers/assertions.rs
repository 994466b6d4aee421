//! Reading and checking answers: headers that must be there, statuses, and problem bodies.

use orders_client::{Error, ResponseValue, types};
use reqwest::{Response, StatusCode, header::HeaderMap};
use serde_json::Value;

/// A response's `ETag` header.
pub fn etag<T>(response: &ResponseValue<T>) -> String {
    header(response.headers(), "etag")
}

/// A header that must be present, as text.
pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("a {name} header in {headers:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The status of a client call's answer, success or documented error.
pub fn status_of<T>(result: &Result<ResponseValue<T>, Error<types::Problem>>) -> StatusCode {
    match result {
        Ok(response) => response.status(),
        Err(error) => error
            .status()
            .unwrap_or_else(|| panic!("an answer from the service: {error}")),
    }
}

/// Asserts that a client call failed with a documented problem of `status` and `code`, decoded
/// into `types::Problem`, served as problem+json and carrying the response's request id; the
/// fields that belong to other codes are absent. Returns the problem with its headers.
pub fn expect_problem<S: std::fmt::Debug>(
    result: Result<S, Error<types::Problem>>,
    status: StatusCode,
    code: &str,
) -> ResponseValue<types::Problem> {
    let problem = match result {
        Err(Error::ErrorResponse(problem)) => problem,
        other => panic!("expected a {status} {code} problem, got {other:?}"),
    };
    assert_eq!(problem.status(), status, "{problem:?}");
    assert_eq!(
        header(problem.headers(), "content-type"),
        "application/problem+json",
        "errors are problem+json"
    );
    let request_id = header(problem.headers(), "x-request-id");
    assert_eq!(problem.status, status.as_u16(), "{problem:?}");
    assert_eq!(problem.code, code, "{problem:?}");
    assert_eq!(problem.request_id, request_id, "{problem:?}");
    assert_eq!(problem.type_, problem_type(code), "{problem:?}");
    assert!(!problem.title.is_empty(), "{problem:?}");
    assert!(!problem.detail.is_empty(), "{problem:?}");
    if code != "ORDER_TIME_CONFLICT" {
        assert_eq!(problem.conflicting_order_id, None, "{problem:?}");
    }
    if code != "UNKNOWN_SERVICE" {
        assert!(problem.unknown_service_ids.is_empty(), "{problem:?}");
    }
    problem
}

/// The problem `type` URI that goes with `code`.
fn problem_type(code: &str) -> String {
    format!(
        "urn:problem-type:orders:{}",
        code.to_lowercase().replace('_', "-")
    )
}

/// Asserts that `response` is a problem+json error with `status` and `code`, in the
/// documented shape, carrying the response's request id; returns the body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let headers: HeaderMap = response.headers().clone();
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "errors are problem+json"
    );
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert_eq!(body["type"], problem_type(code), "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}
