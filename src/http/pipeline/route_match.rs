//! Finds the request's route in the one route table, once, for the stages after it (the log's
//! route label, the scope to check, the methods a path accepts).

use std::sync::Arc;

use poem::{Endpoint, Request, Response};

use super::{Stage, answer};
use crate::http::routes::{MatchedRoute, RouteTable};

#[derive(Clone)]
pub struct MatchRoute {
    routes: Arc<RouteTable>,
}

impl MatchRoute {
    pub fn new(routes: Arc<RouteTable>) -> Self {
        Self { routes }
    }
}

impl Stage for MatchRoute {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        let matched = MatchedRoute(self.routes.route(request.uri().path()).cloned());
        request.extensions_mut().insert(matched);
        answer(next, request).await
    }
}
