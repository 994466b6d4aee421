//! The stages every request passes through before (and after) its operation, each in a file
//! of its own, and [`around`], the one place that puts them in order.
//!
//! A stage looks at the request, may answer it itself (a 401, a 413, ...), and otherwise hands
//! it to the stages inside it; on the way out it may change the answer (headers, a log line).
//! Adding a stage is a file here and a line in [`around`].

mod ambiguity;
mod authentication;
mod body_limit;
mod compression;
mod conditional_headers;
mod framework_errors;
pub mod in_flight;
mod known_route;
mod media_type;
mod pace_refusals;
mod panics;
mod rate_limit;
mod request_id;
mod request_log;
mod response_headers;
mod route_match;

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::StreamExt;
use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, http::header, middleware::CatchPanic,
};

pub use self::{
    compression::{accepts_gzip, gzip},
    framework_errors::EMPTY_IF_MATCH,
};
use super::{
    problem::{ApiError, MAX_BODY_BYTES},
    routes::RouteTable,
};
use crate::{
    app::{Admission, authentication::KeyRing},
    telemetry::metrics::Metrics,
};

/// What the stages need to know of the instance.
pub struct Setup {
    pub routes: RouteTable,
    pub keys: KeyRing,
    pub admission: Admission,
    pub metrics: Metrics,
}

/// `endpoint` (the router) inside every stage, in the order a request meets them: each wraps
/// the ones after it.
pub fn around(endpoint: impl Endpoint + 'static, setup: Setup) -> impl Endpoint {
    let routes = Arc::new(setup.routes);
    Pipeline::starting_with(compression::ResponseCompression)
        .then(request_id::RequestId)
        .then(route_match::MatchRoute::new(routes))
        .then(request_log::RequestLog::new(setup.metrics))
        .then(response_headers::ResponseHeaders)
        .then(pace_refusals::PaceRefusals::new(
            setup.admission.anonymous_refusals_per_second,
        ))
        .then(known_route::KnownRoute)
        .then(authentication::Authenticate::new(setup.keys))
        .then(rate_limit::RateLimit)
        .then(media_type::MediaType)
        .then(body_limit::BodyLimit)
        .then(ambiguity::RefuseAmbiguity)
        .then(in_flight::InFlightCap::new(setup.admission))
        .then(conditional_headers::ConditionalHeaders)
        .then(framework_errors::FrameworkErrors)
        .then(CatchPanic::new().with_handler(panics::answer))
        .around(endpoint)
}

/// The stages of the listener that serves only the metrics (see `crate::http::metrics_app`):
/// an id for each request, so that its answers carry one as the API's do; nothing else applies
/// to a scrape.
pub fn around_metrics(endpoint: impl Endpoint + 'static) -> impl Endpoint {
    Pipeline::starting_with(request_id::RequestId).around(endpoint)
}

/// One stage: it sees each request before the stages inside it (`next`), and their answer
/// after them.
pub trait Stage: Clone + Send + Sync + 'static {
    fn handle<E: Endpoint>(
        &self,
        request: Request,
        next: &E,
    ) -> impl Future<Output = Response> + Send;
}

/// The answer of the stages inside: an error that reached this far becomes its response.
async fn answer<E: Endpoint>(next: &E, request: Request) -> Response {
    match next.call(request).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    }
}

/// Answers `request` with `refusal` without reading its body: a stage that refuses a request
/// from its head alone (no route, no key, no scope, no tokens left) answers through this.
///
/// The body is neither parsed nor kept, but what the client sends of it is read and dropped
/// in the background, up to the body limit and for at most [`DRAIN_TIME`], so that the client
/// reads the answer instead of a reset (a socket closed with unread data sends one) and the
/// connection can serve on. A client that asked to be told to continue is not: it sends
/// nothing until then.
fn refuse(request: Request, refusal: ApiError) -> Response {
    refuse_leaving_body(request, refusal)
}

/// [`refuse`], for a refusal that anyone can provoke, without a key: it is paced (see
/// [`pace_refusals`]).
fn refuse_anonymous(request: Request, refusal: ApiError) -> Response {
    let mut response = refuse_leaving_body(request, refusal);
    response
        .extensions_mut()
        .insert(pace_refusals::RefusedWithoutKey);
    response
}

fn refuse_leaving_body(mut request: Request, refusal: ApiError) -> Response {
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        let body = request.take_body();
        tokio::spawn(drain(body));
    }
    refusal.into_response()
}

/// How long a refused request's body is read for, at most, before its connection is closed.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads `body` and drops it, up to the body limit and [`DRAIN_TIME`]; past either, dropping
/// what is left closes the connection.
async fn drain(body: poem::Body) {
    let mut chunks = body.into_bytes_stream();
    let mut read = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = chunks.next().await {
            read += chunk.len();
            if read > MAX_BODY_BYTES {
                break;
            }
        }
    })
    .await;
}

/// A stage, as poem composes it: the stage and what it wraps.
pub struct Staged<S, E> {
    stage: S,
    next: E,
}

impl<S: Stage, E: Endpoint> Endpoint for Staged<S, E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        Ok(self.stage.handle(request, &self.next).await)
    }
}

/// Makes a [`Stage`] a poem middleware.
macro_rules! middleware_of_stage {
    ($($stage:ty),+ $(,)?) => {
        $(
            impl<E: Endpoint> Middleware<E> for $stage {
                type Output = Staged<$stage, E>;

                fn transform(&self, next: E) -> Self::Output {
                    Staged {
                        stage: self.clone(),
                        next,
                    }
                }
            }
        )+
    };
}

middleware_of_stage!(
    ambiguity::RefuseAmbiguity,
    authentication::Authenticate,
    body_limit::BodyLimit,
    conditional_headers::ConditionalHeaders,
    framework_errors::FrameworkErrors,
    in_flight::InFlightCap,
    known_route::KnownRoute,
    media_type::MediaType,
    pace_refusals::PaceRefusals,
    rate_limit::RateLimit,
    request_id::RequestId,
    request_log::RequestLog,
    response_headers::ResponseHeaders,
    route_match::MatchRoute,
);

/// Middlewares in the order a request meets them: poem's own `.with()` chains read the other
/// way round (each wraps what comes before it), so that a list of many stages would be read
/// from its end.
struct Pipeline<M>(M);

impl<M> Pipeline<M> {
    fn starting_with(outermost: M) -> Self {
        Self(outermost)
    }

    /// `inner` inside the middlewares so far.
    fn then<N>(self, inner: N) -> Pipeline<Outside<M, N>> {
        Pipeline(Outside(self.0, inner))
    }

    fn around<E: Endpoint>(self, endpoint: E) -> M::Output
    where
        M: Middleware<E>,
    {
        self.0.transform(endpoint)
    }
}

/// `A` wrapped around `B`.
struct Outside<A, B>(A, B);

impl<E: Endpoint, A, B> Middleware<E> for Outside<A, B>
where
    B: Middleware<E>,
    A: Middleware<B::Output>,
{
    type Output = A::Output;

    fn transform(&self, endpoint: E) -> Self::Output {
        self.0.transform(self.1.transform(endpoint))
    }
}
