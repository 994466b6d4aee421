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

/// An error answer as a problem check sees it, however it was received: through the typed
/// client or as a raw response.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// The rules every problem answer follows, written once: the HTTP status is `status`, it is
/// served as problem+json and carries a request id, and the body says the same status, `code`
/// and request id, the `type` that goes with the code, a title and a detail; the fields that
/// belong to other codes are absent.
fn check_problem(answer: &Answer, status: StatusCode, code: &str) {
    let Answer {
        status: actual_status,
        headers,
        body,
    } = answer;
    assert_eq!(*actual_status, status, "{body}");
    assert_eq!(
        header(headers, "content-type"),
        "application/problem+json",
        "errors are problem+json"
    );
    let request_id = header(headers, "x-request-id");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert_eq!(body["type"], problem_type(code), "{body}");
    for field in ["title", "detail"] {
        assert!(
            body[field].as_str().is_some_and(|text| !text.is_empty()),
            "a {field}: {body}"
        );
    }
    for (field, owner) in [
        ("conflicting_order_id", "ORDER_TIME_CONFLICT"),
        ("unknown_service_ids", "UNKNOWN_SERVICE"),
    ] {
        if code != owner {
            assert_eq!(body.get(field), None, "{field} is only for {owner}: {body}");
        }
    }
}

/// The problem `type` URI that goes with `code`.
fn problem_type(code: &str) -> String {
    format!(
        "urn:problem-type:orders:{}",
        code.to_lowercase().replace('_', "-")
    )
}

/// Asserts that a client call failed with a documented problem of `status` and `code`, decoded
/// into `types::Problem` (see [`check_problem`] for what else is checked). Returns the problem
/// with its headers.
pub fn expect_problem<S: std::fmt::Debug>(
    result: Result<S, Error<types::Problem>>,
    status: StatusCode,
    code: &str,
) -> ResponseValue<types::Problem> {
    let problem = match result {
        Err(Error::ErrorResponse(problem)) => problem,
        other => panic!("expected a {status} {code} problem, got {other:?}"),
    };
    let answer = Answer {
        status: problem.status(),
        headers: problem.headers().clone(),
        body: serde_json::to_value(&*problem).expect("a problem serialises"),
    };
    check_problem(&answer, status, code);
    problem
}

/// Asserts that a raw response is a problem of `status` and `code` (see [`check_problem`] for
/// what else is checked). Returns the body as sent.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    let status_received = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("read the response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("a JSON problem body, not {text:?}: {error}"));
    let answer = Answer {
        status: status_received,
        headers,
        body,
    };
    check_problem(&answer, status, code);
    answer.body
}
