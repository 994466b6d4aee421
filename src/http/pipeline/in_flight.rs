//! The cap on the requests an instance works on at once, which keeps it answering when it is
//! asked for more than it can do.
//!
//! Past the cap a request is refused at once, 503 `OVERLOADED` with `Retry-After`, rather than
//! queued: a queue without a bound only turns overload into timeouts for everyone. A place is
//! taken once the body has been read (at most 64 KiB), so that clients trickling bodies cannot
//! hold every place. The probes and the metrics are outside the cap, so a load balancer and a
//! scraper still see a busy instance as it is. A read of the change feed that waits for events
//! gives its place up while it sleeps (see [`Place::give_up`]): else a few hundred consumers
//! waiting for news would keep out every other request.

use std::sync::{Arc, Mutex, PoisonError};

use poem::{Endpoint, IntoResponse, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Stage, answer};
use crate::http::problem::ApiError;

/// Takes a place under the cap for each request, held until its answer is produced; the
/// request's extensions carry a handle on it for the handler.
#[derive(Clone)]
pub struct InFlightCap {
    limit: InFlightLimit,
}

impl InFlightCap {
    pub fn new(max: usize) -> Self {
        Self {
            limit: InFlightLimit::new(max),
        }
    }
}

impl Stage for InFlightCap {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        // Held until the answer is produced, at the end of this call, unless the handler gives
        // it up through the clone in the request's extensions.
        let place = match self.limit.admit(request.uri().path()) {
            Ok(place) => place,
            Err(error) => return error.into_response(),
        };
        request.extensions_mut().insert(place.clone());
        answer(next, request).await
    }
}

/// Paths that never wait for, or take, a place under the cap.
const EXEMPT_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The places for requests in flight. Cheap to clone: one shared count.
#[derive(Clone)]
struct InFlightLimit {
    places: Arc<Semaphore>,
}

/// A request's place under the cap (none for an exempt path), given back when the last clone
/// is dropped, or earlier with [`Place::give_up`]. The pipeline holds one until the answer is
/// produced; the request's extensions carry another, for the handler.
#[derive(Debug, Clone, Default)]
pub struct Place(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Place {
    /// Gives the place back now, for a handler about to wait for something other than the
    /// database (a change feed read waiting for events), which holds nothing meanwhile.
    pub fn give_up(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

impl InFlightLimit {
    /// Room for `max` requests at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// A place for a request to `path`, to hold until its answer is produced: else the 503 to
    /// answer with, at once.
    pub fn admit(&self, path: &str) -> Result<Place, ApiError> {
        if EXEMPT_PATHS.contains(&path) {
            return Ok(Place::default());
        }
        match self.places.clone().try_acquire_owned() {
            Ok(place) => Ok(Place(Arc::new(Mutex::new(Some(place))))),
            Err(_) => Err(ApiError::overloaded()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_requests_are_refused_but_probes_are_not() {
        let limit = InFlightLimit::new(1);
        let held = limit.admit("/orders").unwrap();
        assert_eq!(
            limit.admit("/services").unwrap_err().code(),
            crate::http::problem::ErrorCode::Overloaded
        );
        for probe in EXEMPT_PATHS {
            limit.admit(probe).unwrap();
        }
        drop(held);
        limit.admit("/orders").unwrap();
    }

    #[test]
    fn a_place_given_up_lets_another_request_in_and_is_given_back_once() {
        let limit = InFlightLimit::new(1);
        let place = limit.admit("/events").unwrap();
        let the_handlers = place.clone();
        assert!(limit.admit("/orders").is_err());
        the_handlers.give_up();
        let next = limit.admit("/orders").unwrap();
        drop(place);
        drop(the_handlers);
        assert!(
            limit.admit("/orders").is_err(),
            "the place was given back twice"
        );
        drop(next);
        limit.admit("/orders").unwrap();
    }
}
