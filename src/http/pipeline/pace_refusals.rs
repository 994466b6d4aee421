//! Paces the refusals anyone can make the instance give: a request without a route (404, 405)
//! or without a valid key (401). Each costs little, but a flood of them is answered as fast as
//! it comes, and took four tenths of an instance's time (and half its reads' rate) from callers
//! with keys. So up to a budget a second they are answered at once, and past it each after
//! [`PACE`]: the client waits, holding its connection, and the instance spends nothing on it
//! meanwhile. A client that is merely misconfigured sends far fewer than the budget.
//!
//! At most [`MAX_PACED`] refusals wait at once, so that pacing cannot hold more connections
//! than that; past it, a refusal is answered at once with its connection closed after, so
//! that a client must connect anew for each.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use poem::{
    Endpoint, Request, Response,
    http::{HeaderValue, header},
};

use super::{Stage, answer};

/// How long a refusal past the budget waits before it is sent.
pub const PACE: Duration = Duration::from_secs(1);

/// The most paced refusals waiting at once.
pub const MAX_PACED: usize = 256;

/// Marks an answer as a refusal from the request's head that needed no key to provoke.
#[derive(Debug, Clone, Copy)]
pub struct RefusedWithoutKey;

#[derive(Clone)]
pub struct PaceRefusals {
    /// `None`: never paced.
    budget: Option<Arc<DefaultDirectRateLimiter>>,
    paced: Arc<AtomicUsize>,
}

impl PaceRefusals {
    /// Answers `per_second` such refusals a second at once (with a burst of as many); 0 never
    /// paces.
    pub fn new(per_second: u32) -> Self {
        let budget = NonZeroU32::new(per_second).map(|rate| {
            Arc::new(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(rate),
            ))
        });
        Self {
            budget,
            paced: Arc::default(),
        }
    }
}

impl Stage for PaceRefusals {
    async fn handle<E: Endpoint>(&self, request: Request, next: &E) -> Response {
        let response = answer(next, request).await;
        let Some(budget) = &self.budget else {
            return response;
        };
        if response.extensions().get::<RefusedWithoutKey>().is_none() || budget.check().is_ok() {
            return response;
        }
        match Paced::join(&self.paced) {
            Some(_paced) => tokio::time::sleep(PACE).await,
            // As many wait as may: answered at once, but its connection closed after, so that
            // the client must connect anew for its next.
            None => {
                let mut response = response;
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
        }
        response
    }
}

/// A refusal counted among those waiting out their pace, until dropped (however its request
/// ends).
struct Paced<'a>(&'a AtomicUsize);

impl<'a> Paced<'a> {
    /// Counts a refusal in, unless [`MAX_PACED`] wait already.
    fn join(paced: &'a AtomicUsize) -> Option<Self> {
        paced
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < MAX_PACED).then_some(count + 1)
            })
            .ok()
            .map(|_| Self(paced))
    }
}

impl Drop for Paced<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
