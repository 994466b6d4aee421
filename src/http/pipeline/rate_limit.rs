//! Each API key's rate limit: a request past it is answered 429 `RATE_LIMITED` at once, with
//! `Retry-After` (see [`crate::app::rate_limit`] for the buckets). Checked after the key and its
//! scope, so a request without a valid key is refused before any limit is looked at: the limit
//! is per key, and a caller without one has no bucket to take from.

use poem::{Endpoint, Request, Response};

use super::{Stage, answer, refuse};
use crate::{app::authentication::Caller, http::problem::ApiError};

#[derive(Clone)]
pub struct RateLimit;

impl Stage for RateLimit {
    async fn handle<E: Endpoint>(&self, request: Request, next: &E) -> Response {
        if let Some(caller) = request.extensions().get::<Caller>()
            && let Err(refused) = caller.check_rate()
        {
            let refusal = ApiError::rate_limited(&caller.name, &refused);
            return refuse(request, refusal);
        }
        answer(next, request).await
    }
}
