//! The bounds that keep an instance answering when it is asked for more than it can do: a cap
//! on the requests it works on at once, and each API key's rate limit.
//!
//! Both refuse at once rather than queue: a queue without a bound only turns overload into
//! timeouts for everyone. The rate limit is checked before the body is read; a place under
//! the cap is taken once it has been read (at most 64 KiB), so that clients trickling bodies
//! cannot hold every place. Past the cap a request gets 503
//! `OVERLOADED`; a key over its limit (see [`crate::app::rate_limit`]) gets 429
//! `RATE_LIMITED`; both say in `Retry-After` when to come back. The probes and the metrics are
//! outside the cap, so a load balancer and a scraper still see a busy instance as it is, and
//! so are reads of the change feed that wait for events (see `is_long_poll`). A
//! request without a valid key is refused by authentication before any limit is looked at:
//! the rate limit is per key, and a caller without one has no bucket to take from.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::problem::ApiError;
use crate::app::access::Caller;

/// Paths that never wait for, or take, a place under the cap.
const EXEMPT_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The places for requests in flight. Cheap to clone: one shared count.
#[derive(Clone)]
pub struct InFlightLimit {
    places: Arc<Semaphore>,
}

/// A request's place under the cap, given back when dropped; none for an exempt path.
pub type Place = Option<OwnedSemaphorePermit>;

impl InFlightLimit {
    /// Room for `max` requests at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// A place for a request to `path` with `query`, to hold until its answer is produced:
    /// else the 503 to answer with, at once.
    pub fn admit(&self, path: &str, query: Option<&str>) -> Result<Place, ApiError> {
        if EXEMPT_PATHS.contains(&path) || is_long_poll(path, query) {
            return Ok(None);
        }
        match self.places.clone().try_acquire_owned() {
            Ok(place) => Ok(Some(place)),
            Err(_) => Err(ApiError::overloaded()),
        }
    }
}

/// Whether the request is a read of the change feed that may wait for events (`wait` other
/// than 0). Such a read spends nearly all its time asleep, holding no database connection
/// (see [`crate::app::events`]), so it takes no place: else a few hundred consumers waiting
/// for news would keep out every other request. Its reads still wait for the pool like any
/// other, so the database is no more loaded for it. One with a malformed `wait` is refused
/// at once anyway.
fn is_long_poll(path: &str, query: Option<&str>) -> bool {
    path == "/events"
        && query.is_some_and(|query| {
            query
                .split('&')
                .filter_map(|pair| pair.strip_prefix("wait="))
                .any(|seconds| !seconds.trim_start_matches('0').is_empty())
        })
}

/// Takes one request's token from the caller's bucket: else the 429 to answer with.
pub fn check_rate(caller: &Caller) -> Result<(), ApiError> {
    caller
        .check_rate()
        .map_err(|refused| ApiError::rate_limited(&caller.name, &refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_requests_are_refused_but_probes_are_not() {
        let limit = InFlightLimit::new(1);
        let held = limit.admit("/orders", None).unwrap();
        assert!(held.is_some());
        assert_eq!(
            limit.admit("/services", None).unwrap_err().code(),
            crate::http::problem::ErrorCode::Overloaded
        );
        for probe in EXEMPT_PATHS {
            assert!(limit.admit(probe, None).unwrap().is_none(), "{probe}");
        }
        drop(held);
        assert!(limit.admit("/orders", None).unwrap().is_some());
    }

    #[test]
    fn feed_reads_that_wait_take_no_place_and_the_others_do() {
        let limit = InFlightLimit::new(1);
        let _held = limit.admit("/orders", None).unwrap();
        for waiting in ["wait=30", "after=now&wait=5", "wait=010"] {
            assert!(
                limit.admit("/events", Some(waiting)).unwrap().is_none(),
                "{waiting}"
            );
        }
        for not_waiting in [
            None,
            Some("wait=0"),
            Some("wait=00&limit=5"),
            Some("await=5"),
        ] {
            assert!(
                limit.admit("/events", not_waiting).is_err(),
                "{not_waiting:?}"
            );
        }
        assert!(limit.admit("/orders", Some("wait=5")).is_err());
    }
}
