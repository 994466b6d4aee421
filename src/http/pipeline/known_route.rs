//! Refuses, from the request line alone, a request that no operation takes: 404 for a path
//! the route table lacks, 405 (with `Allow`) for a method its path lacks. Nothing of such a
//! request's body is parsed, so it costs what its head costs (see [`super::refuse`]), and such
//! refusals are paced (see [`super::pace_refusals`]).

use poem::{Endpoint, Request, Response, http::Method};

use super::{Stage, answer, refuse_anonymous};
use crate::http::{problem::ApiError, routes::MatchedRoute};

#[derive(Clone)]
pub struct KnownRoute;

impl Stage for KnownRoute {
    async fn handle<E: Endpoint>(&self, request: Request, next: &E) -> Response {
        let matched = request.extensions().get::<MatchedRoute>();
        let Some(route) = matched.and_then(|matched| matched.0.as_ref()) else {
            let refusal = ApiError::nothing_at(request.uri().path());
            return refuse_anonymous(request, refusal);
        };
        let method = request.method();
        let head_of_get = *method == Method::HEAD && route.accepts(&Method::GET);
        if !route.accepts(method) && !head_of_get {
            let refusal = ApiError::method_not_allowed(route.allow());
            return refuse_anonymous(request, refusal);
        }
        // Boxed, once, halfway down the stages: nested in place, the futures of every stage
        // make one state machine that, unoptimised, is large enough to overflow a test
        // thread's stack (see also the router's, in `framework_errors`).
        Box::pin(answer(next, request)).await
    }
}
