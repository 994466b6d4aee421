//! The headers every answer carries: no client may guess another type than the one declared,
//! and caches keep only what cannot change between deploys.

use poem::{
    Endpoint, Request, Response,
    http::{HeaderValue, header},
};

use super::{Stage, answer};

#[derive(Clone)]
pub struct ResponseHeaders;

impl Stage for ResponseHeaders {
    async fn handle<E: Endpoint>(&self, request: Request, next: &E) -> Response {
        let cache_control = cache_control(request.uri().path());
        let mut response = answer(next, request).await;
        let headers = response.headers_mut();
        // No client may guess a type other than the one declared (a problem body as HTML, say).
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CACHE_CONTROL, cache_control);
        response
    }
}

/// What caches may keep: the spec and the docs page change only with a deploy, so a few
/// minutes is safe; everything else is data that another caller may change at any moment, and
/// may be a key's private view, so none of it is stored.
fn cache_control(path: &str) -> HeaderValue {
    if matches!(path, "/openapi.json" | "/openapi.yaml" | "/docs") {
        HeaderValue::from_static("public, max-age=300")
    } else {
        HeaderValue::from_static("no-store")
    }
}
