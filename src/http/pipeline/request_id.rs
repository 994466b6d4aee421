//! Gives each request an id (the caller's `X-Request-Id` when it is a sensible one, else a new
//! one), for every problem body, log line and the answer's own `X-Request-Id`.

use poem::{Endpoint, Request, Response, http::HeaderValue};

use super::{Stage, answer};
use crate::http::problem::REQUEST_ID;

const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id, for the stages inside this one (the log's span).
#[derive(Debug, Clone)]
pub struct RequestIdOf(pub String);

#[derive(Clone)]
pub struct RequestId;

impl Stage for RequestId {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        let request_id = request_id(&request);
        request
            .extensions_mut()
            .insert(RequestIdOf(request_id.clone()));
        let mut response = REQUEST_ID
            .scope(request_id.clone(), answer(next, request))
            .await;
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }
}

/// The caller's request id when it is a sensible one, else a fresh one.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 200)
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// A random (version 4) UUID, from the thread's own generator: `Uuid::new_v4` asks the
/// kernel for every one, a system call per request. Request ids need to be unique, not secret.
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .to_string()
}
