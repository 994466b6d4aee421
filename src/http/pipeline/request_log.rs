//! Runs each request inside its tracing span (its id, method, path, query and user agent and,
//! once known, the API key's name), logs it once when it is answered, and records its duration
//! under its route's template in this instance's metrics (see [`crate::telemetry::metrics`]),
//! which every stage and operation inside records to.
//!
//! What the caller sent is logged [`Bounded`]: a request line and its headers may be hundreds
//! of kilobytes, and every request is logged. A request refused without a valid key (a 401, or
//! a 404 or 405 for a path or method the API does not have) is one anyone can send as fast as
//! they like, so those lines are [`Sampled`], at most one a second for each status, each
//! saying how many alike it stands for (`suppressed`); the metrics count them all.

use std::{sync::Arc, time::Instant};

use poem::{
    Endpoint, Request, Response,
    http::{StatusCode, header},
};
use tracing::{Instrument, field};

use super::{Stage, answer, request_id::RequestIdOf};
use crate::{
    http::routes::MatchedRoute,
    telemetry::{
        bounded::Bounded,
        metrics::{AnonymousRefusal, Metrics, UNMATCHED_ROUTE},
        sampling::Sampled,
    },
};

#[derive(Clone)]
pub struct RequestLog {
    metrics: Metrics,
    /// The log lines of anonymous refusals, by [`AnonymousRefusal::index`].
    refusal_lines: Arc<[Sampled; 3]>,
}

impl RequestLog {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            refusal_lines: Arc::new(AnonymousRefusal::ALL.map(|_| Sampled::per_second())),
        }
    }
}

impl Stage for RequestLog {
    async fn handle<E: Endpoint>(&self, request: Request, next: &E) -> Response {
        let started = Instant::now();
        let _active = self.metrics.request_started();
        let request_id = request
            .extensions()
            .get::<RequestIdOf>()
            .map(|id| id.0.clone())
            .unwrap_or_default();
        let route = request
            .extensions()
            .get::<MatchedRoute>()
            .cloned()
            .unwrap_or_default();
        let method = request.method().clone();
        // `key` is the name of the caller's API key, once it is known; never its secret. The
        // request id needs no bound: one longer than 200 bytes is replaced with a new one.
        let span = tracing::info_span!(
            "request",
            %request_id,
            method = %Bounded::text(method.as_str()),
            path = %Bounded::text(request.uri().path()),
            query = field::Empty,
            user_agent = field::Empty,
            key = field::Empty
        );
        if let Some(query) = request.uri().query() {
            span.record("query", field::display(Bounded::text(query)));
        }
        if let Some(user_agent) = request.headers().get(header::USER_AGENT) {
            span.record(
                "user_agent",
                field::display(Bounded::bytes(user_agent.as_bytes())),
            );
        }
        let response = self
            .metrics
            .scope(answer(next, request).instrument(span.clone()))
            .await;
        let status = response.status();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        // A protected operation answers only a caller with a valid key (401 otherwise), so
        // its 404s (no such order) are that caller's, logged like any answer.
        let protected = route
            .0
            .as_ref()
            .is_some_and(|route| route.required_scope(&method).is_some());
        match anonymous_refusal(status, protected) {
            None => span.in_scope(|| {
                tracing::info!(status = status.as_u16(), latency_ms, "request served");
            }),
            Some(refusal) => {
                self.metrics.anonymous_refusal(refusal);
                if let Some(suppressed) = self.refusal_lines[refusal.index()].admit() {
                    span.in_scope(|| {
                        tracing::info!(
                            status = status.as_u16(),
                            latency_ms,
                            suppressed,
                            "request served"
                        );
                    });
                }
            }
        }
        let label = route
            .0
            .as_ref()
            .map_or(UNMATCHED_ROUTE, |route| route.path.as_str());
        self.metrics
            .request_served(method.as_str(), label, status.as_u16(), started.elapsed());
        response
    }
}

/// The kind of refusal an answer of `status` is, if it is one of a request without a valid key:
/// a 401; or a 404 or 405 outside the protected operations (an unknown path, a method the path
/// does not have), which no key was asked for.
fn anonymous_refusal(status: StatusCode, protected: bool) -> Option<AnonymousRefusal> {
    match status {
        StatusCode::UNAUTHORIZED => Some(AnonymousRefusal::Unauthenticated),
        StatusCode::NOT_FOUND if !protected => Some(AnonymousRefusal::NotFound),
        StatusCode::METHOD_NOT_ALLOWED if !protected => Some(AnonymousRefusal::MethodNotAllowed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_no_key_was_checked_for_are_anonymous() {
        use AnonymousRefusal::*;
        for (status, protected, expected) in [
            (StatusCode::UNAUTHORIZED, true, Some(Unauthenticated)),
            (StatusCode::NOT_FOUND, false, Some(NotFound)),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                false,
                Some(MethodNotAllowed),
            ),
            // A valid key's: no such order.
            (StatusCode::NOT_FOUND, true, None),
            (StatusCode::FORBIDDEN, true, None),
            (StatusCode::OK, false, None),
            (StatusCode::BAD_REQUEST, false, None),
        ] {
            assert_eq!(
                anonymous_refusal(status, protected),
                expected,
                "{status} {protected}"
            );
        }
    }
}
