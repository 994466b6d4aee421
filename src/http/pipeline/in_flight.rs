//! The cap on the requests an instance works on at once, which keeps it answering when it is
//! asked for more than it can do.
//!
//! Past the cap a request waits for a place, in the order of arrival, for at most the queue
//! wait (500 ms unless configured); only a request still waiting then is refused, 503
//! `OVERLOADED` with `Retry-After`. Overload is shed by time, not by count: under a burst of
//! thousands of clients, each waits a little (the instance answers a short request in well
//! under a millisecond, so thousands queued are a few hundred milliseconds of work) instead of
//! most being refused at once and coming straight back, which spent the instance's time on
//! refusals: at 2,000 clients a count alone refused 93% and served a sixth of what 16 clients
//! got. The number waiting is bounded too, as a bound on their memory; past it a request is
//! refused at once.
//!
//! A place is taken once the body has been read (at most 64 KiB), so that clients trickling
//! bodies cannot hold every place. The probes and the metrics are outside the cap, so a load
//! balancer and a scraper still see a busy instance as it is. A read of the change feed that
//! waits for events gives its place up while it sleeps (see [`Place::give_up`]): else a few
//! hundred consumers waiting for news would keep out every other request.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use poem::{Endpoint, IntoResponse, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Stage, answer};
use crate::{app::Admission, http::problem::ApiError};

/// Takes a place under the cap for each request, held until its answer is produced; the
/// request's extensions carry a handle on it for the handler.
#[derive(Clone)]
pub struct InFlightCap {
    limit: InFlightLimit,
}

impl InFlightCap {
    pub fn new(admission: Admission) -> Self {
        Self {
            limit: InFlightLimit::new(admission),
        }
    }
}

impl Stage for InFlightCap {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        // Held until the answer is produced, at the end of this call, unless the handler gives
        // it up through the clone in the request's extensions.
        let place = match self.limit.admit(request.uri().path()).await {
            Ok(place) => place,
            Err(error) => return error.into_response(),
        };
        request.extensions_mut().insert(place.clone());
        answer(next, request).await
    }
}

/// Paths that never wait for, or take, a place under the cap.
const EXEMPT_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The places for requests in flight, and the line for them. Cheap to clone: one shared count.
#[derive(Clone)]
struct InFlightLimit {
    places: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    admission: Admission,
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

    fn holding(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(Mutex::new(Some(permit))))
    }
}

impl InFlightLimit {
    /// Room for `admission.max_in_flight` requests at once (at least one).
    pub fn new(admission: Admission) -> Self {
        Self {
            places: Arc::new(Semaphore::new(
                admission.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
            )),
            waiting: Arc::default(),
            admission,
        }
    }

    /// A place for a request to `path`, to hold until its answer is produced, as soon as one
    /// is free and within the queue wait: else the 503 to answer with.
    pub async fn admit(&self, path: &str) -> Result<Place, ApiError> {
        if EXEMPT_PATHS.contains(&path) {
            return Ok(Place::default());
        }
        if let Ok(permit) = self.places.clone().try_acquire_owned() {
            return Ok(Place::holding(permit));
        }
        let _in_line = InLine::join(&self.waiting, self.admission.max_queued)
            .ok_or_else(ApiError::overloaded)?;
        // The semaphore hands out places in the order they were asked for. Boxed: only a
        // request that waits pays for the room a timer takes, not every request's future.
        let wait = tokio::time::timeout(
            self.admission.max_queue_wait,
            self.places.clone().acquire_owned(),
        );
        match Box::pin(wait).await {
            Ok(Ok(permit)) => Ok(Place::holding(permit)),
            // Timed out (the semaphore is never closed).
            _ => Err(ApiError::overloaded()),
        }
    }
}

/// A request counted among those waiting for a place, until dropped.
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    /// Counts a request in, unless `max` are waiting already.
    fn join(waiting: &'a AtomicUsize, max: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .ok()
            .map(|_| Self(waiting))
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::problem::ErrorCode;

    fn limit(max_in_flight: usize, max_queue_wait: Duration, max_queued: usize) -> InFlightLimit {
        InFlightLimit::new(Admission {
            max_in_flight,
            max_queue_wait,
            max_queued,
            anonymous_refusals_per_second: 0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_a_request_waits_its_bound_for_a_place_and_probes_never_wait() {
        let limit = limit(1, Duration::from_millis(500), 10);
        let held = limit.admit("/orders").await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            limit.admit("/services").await.unwrap_err().code(),
            ErrorCode::Overloaded
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        for probe in EXEMPT_PATHS {
            limit.admit(probe).await.unwrap();
        }
        assert_eq!(started.elapsed(), Duration::from_millis(500), "at once");
        drop(held);
        limit.admit("/orders").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_freed_within_the_bound_goes_to_the_first_in_line() {
        let limit = limit(1, Duration::from_millis(500), 10);
        let held = limit.admit("/orders").await.unwrap();
        let started = tokio::time::Instant::now();
        let first = tokio::spawn({
            let limit = limit.clone();
            // The place is kept, as a request in flight keeps it.
            async move {
                limit
                    .admit("/orders")
                    .await
                    .map(|place| (place, tokio::time::Instant::now()))
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second = tokio::spawn({
            let limit = limit.clone();
            async move {
                limit
                    .admit("/orders")
                    .await
                    .map(|_| tokio::time::Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let (_place, first) = first
            .await
            .unwrap()
            .expect("the first in line got the freed place");
        let second = second.await.unwrap();
        assert!(
            second.is_err(),
            "the second waited out its bound behind the first"
        );
        assert_eq!(
            first - started,
            Duration::from_millis(101),
            "as soon as it was free"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_line_full_a_request_is_refused_at_once() {
        let limit = limit(1, Duration::from_millis(500), 1);
        let _held = limit.admit("/orders").await.unwrap();
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.admit("/orders").await.is_err() }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let started = tokio::time::Instant::now();
        assert!(limit.admit("/orders").await.is_err());
        assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
        assert!(
            waiting.await.unwrap(),
            "the one in line waited out its bound"
        );
        assert_eq!(
            limit.waiting.load(Ordering::Acquire),
            0,
            "nobody counted as waiting"
        );
    }

    #[tokio::test]
    async fn a_place_given_up_lets_another_request_in_and_is_given_back_once() {
        let limit = limit(1, Duration::ZERO, 0);
        let place = limit.admit("/events").await.unwrap();
        let the_handlers = place.clone();
        assert!(limit.admit("/orders").await.is_err());
        the_handlers.give_up();
        let next = limit.admit("/orders").await.unwrap();
        drop(place);
        drop(the_handlers);
        assert!(
            limit.admit("/orders").await.is_err(),
            "the place was given back twice"
        );
        drop(next);
        limit.admit("/orders").await.unwrap();
    }
}
