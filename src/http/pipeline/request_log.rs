//! Runs each request inside its tracing span (its id, method, path and, once known, the API
//! key's name), logs it once when it is answered, and records its duration under its route's
//! template in this instance's metrics (see [`crate::telemetry::metrics`]), which every stage
//! and operation inside records to.

use std::time::Instant;

use poem::{Endpoint, Request, Response};
use tracing::Instrument;

use super::{Stage, answer, request_id::RequestIdOf};
use crate::{
    http::routes::MatchedRoute,
    telemetry::metrics::{Metrics, UNMATCHED_ROUTE},
};

#[derive(Clone)]
pub struct RequestLog {
    metrics: Metrics,
}

impl RequestLog {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
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
        let path = request.uri().path().to_owned();
        // `key` is the name of the caller's API key, once it is known; never its secret.
        let span = tracing::info_span!(
            "request",
            %request_id,
            %method,
            %path,
            key = tracing::field::Empty
        );
        let response = self
            .metrics
            .scope(answer(next, request).instrument(span.clone()))
            .await;
        let status = response.status().as_u16();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        span.in_scope(|| tracing::info!(status, latency_ms, "request served"));
        let label = route
            .0
            .as_ref()
            .map_or(UNMATCHED_ROUTE, |route| route.path.as_str());
        self.metrics
            .request_served(method.as_str(), label, status, started.elapsed());
        response
    }
}
