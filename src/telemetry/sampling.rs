//! Log lines that anyone can cause, as often as they like (a refused request without a key,
//! say), sampled: at most one a second for each kind, each telling how many alike were not
//! written since the one before. A metric should count them all; the log keeps a sample
//! within reach of an operator without letting a flood fill the disk.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// One kind of line, sampled.
pub struct Sampled {
    lines: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
}

impl Sampled {
    /// At most one line a second, the first at once.
    pub fn per_second() -> Self {
        Self {
            lines: RateLimiter::direct(Quota::per_second(NonZeroU32::MIN)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this event gets its line: if it does, how many before it were left without one
    /// since the last line.
    pub fn admit(&self) -> Option<u64> {
        if self.lines.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_written_and_the_rest_of_the_second_counted_for_the_next() {
        let sampled = Sampled::per_second();
        assert_eq!(sampled.admit(), Some(0));
        for _ in 0..99 {
            assert_eq!(sampled.admit(), None);
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(sampled.admit(), Some(99));
        assert_eq!(sampled.admit(), None);
    }
}
