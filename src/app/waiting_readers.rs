//! The readers waiting for the change feed on this instance (see [`super::events`]): how many
//! may wait at once, in all and per API key.
//!
//! A waiting reader holds no database connection, but it holds its client's connection and a
//! task for as long as it waits (up to 30 s). The bound per key keeps one caller from taking
//! every place; the bound per instance keeps what they all hold in check. A reader past either
//! is answered at once, as one that asks for no wait is: an empty page and its own cursor,
//! which is a correct answer (its client asks again).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// How many readers may wait at once on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingBounds {
    pub per_instance: usize,
    /// Of one API key.
    pub per_key: usize,
}

/// The bound that refused a reader's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundReached {
    PerKey,
    PerInstance,
}

/// The waiting readers. Cheap to clone: one shared registry.
#[derive(Clone)]
pub struct WaitingReaders {
    bounds: WaitingBounds,
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    waiting: usize,
    /// How many readers of each key wait; a key with none has no entry.
    per_key: HashMap<i64, usize>,
}

impl WaitingReaders {
    pub fn new(bounds: WaitingBounds) -> Self {
        Self {
            bounds,
            registry: Arc::default(),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock; if something did, the counts are still whole.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a reader with the key `key_id` to wait; refused when its key, or the
    /// instance, has as many waiting as it may. Held until the returned guard is dropped.
    pub fn begin(&self, key_id: i64) -> Result<Waiting, BoundReached> {
        let mut registry = self.registry();
        if registry.per_key.get(&key_id).copied().unwrap_or(0) >= self.bounds.per_key {
            return Err(BoundReached::PerKey);
        }
        if registry.waiting >= self.bounds.per_instance {
            return Err(BoundReached::PerInstance);
        }
        registry.waiting += 1;
        *registry.per_key.entry(key_id).or_default() += 1;
        Ok(Waiting {
            readers: self.clone(),
            key_id,
        })
    }

    /// How many readers wait now.
    pub fn count(&self) -> usize {
        self.registry().waiting
    }
}

/// One reader's place among the waiting, given back when dropped.
pub struct Waiting {
    readers: WaitingReaders,
    key_id: i64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut registry = self.readers.registry();
        registry.waiting -= 1;
        if let Some(count) = registry.per_key.get_mut(&self.key_id) {
            *count -= 1;
            if *count == 0 {
                registry.per_key.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readers(per_instance: usize, per_key: usize) -> WaitingReaders {
        WaitingReaders::new(WaitingBounds {
            per_instance,
            per_key,
        })
    }

    #[test]
    fn a_key_past_its_bound_is_refused_and_other_keys_wait_up_to_the_instance_s() {
        let readers = readers(3, 2);
        let first = readers.begin(1).unwrap();
        let _second = readers.begin(1).unwrap();
        assert_eq!(readers.begin(1).err(), Some(BoundReached::PerKey));
        let _other = readers.begin(2).unwrap();
        assert_eq!(readers.begin(3).err(), Some(BoundReached::PerInstance));
        drop(first);
        let _again = readers.begin(1).expect("a place given back");
        assert_eq!(readers.count(), 3);
    }
}
