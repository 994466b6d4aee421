//! The readers waiting for the change feed on this instance (see [`super::events`]): how many
//! may wait at once, in all and per API key; the largest page the readers waiting at each
//! cursor ask for, so that one read serves all of them when they are woken together; and whose
//! wait the server ends first when it needs a connection back.
//!
//! A waiting reader holds no database connection, but it holds its client's connection and a
//! task for as long as it waits (up to 30 s). The bound per key keeps one caller from taking
//! every place; the bound per instance keeps what they all hold in check. A reader past either
//! is answered at once, as one that asks for no wait is: an empty page and its own cursor,
//! which is a correct answer (its client asks again).

use std::{
    collections::{BTreeMap, HashMap, btree_map},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::{sync::Notify, time::Instant};

use crate::domain::FeedPosition;

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

/// The client connection a request came on, as the server numbers its connections: lets the
/// server, at its cap on connections, find the connection of the reader whose wait it ends
/// (see [`WaitingReaders::end_longest_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// The waiting readers. Cheap to clone: one shared registry.
#[derive(Clone)]
pub struct WaitingReaders {
    bounds: WaitingBounds,
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    waiting: usize,
    /// How many readers of each key wait; a key with none has no entry.
    per_key: HashMap<i64, usize>,
    /// The limits of the readers waiting at each position, with how many ask for each.
    limits_at: HashMap<FeedPosition, BTreeMap<usize, usize>>,
    /// The readers waiting on a connection, the one waiting longest first, with what ends each
    /// one's wait. A reader leaves it when it stops waiting, or when its wait is ended.
    by_age: BTreeMap<(Instant, u64), (ConnectionId, Arc<Notify>)>,
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

    /// A place for a reader with the key `key_id` to wait at `position` for up to `limit`
    /// events, on `connection` when it came on one; refused when its key, or the instance, has
    /// as many waiting as it may. Held until the returned guard is dropped.
    pub fn begin(
        &self,
        key_id: i64,
        position: FeedPosition,
        limit: usize,
        connection: Option<ConnectionId>,
    ) -> Result<Waiting, BoundReached> {
        let mut registry = self.registry();
        if registry.per_key.get(&key_id).copied().unwrap_or(0) >= self.bounds.per_key {
            return Err(BoundReached::PerKey);
        }
        if registry.waiting >= self.bounds.per_instance {
            return Err(BoundReached::PerInstance);
        }
        registry.waiting += 1;
        *registry.per_key.entry(key_id).or_default() += 1;
        *registry
            .limits_at
            .entry(position)
            .or_default()
            .entry(limit)
            .or_default() += 1;
        let id = registry.next_id;
        registry.next_id += 1;
        let since = Instant::now();
        let end = Arc::new(Notify::new());
        if let Some(connection) = connection {
            registry
                .by_age
                .insert((since, id), (connection, Arc::clone(&end)));
        }
        Ok(Waiting {
            readers: self.clone(),
            id,
            since,
            key_id,
            position,
            limit,
            end,
        })
    }

    /// The largest page asked for by the readers waiting at `position`, if any waits there.
    pub fn largest_limit_at(&self, position: FeedPosition) -> Option<usize> {
        let registry = self.registry();
        let limits = registry.limits_at.get(&position)?;
        limits.last_key_value().map(|(&limit, _)| limit)
    }

    /// Ends the wait of the reader that has waited longest on a connection: it answers at once
    /// (with no events and its cursor). Returns that connection; none when no reader waits on
    /// one. Each reader's wait is ended once at most.
    pub fn end_longest_wait(&self) -> Option<ConnectionId> {
        let (_, (connection, end)) = self.registry().by_age.pop_first()?;
        // A permit is kept if the reader is not listening at this moment: it sees it next.
        end.notify_one();
        Some(connection)
    }

    /// How many readers wait now.
    pub fn count(&self) -> usize {
        self.registry().waiting
    }
}

/// One reader's place among the waiting, given back when dropped.
pub struct Waiting {
    readers: WaitingReaders,
    id: u64,
    since: Instant,
    key_id: i64,
    position: FeedPosition,
    limit: usize,
    end: Arc<Notify>,
}

impl Waiting {
    /// Returns once the server has ended this wait, to have the reader's connection back.
    pub async fn ended(&self) {
        self.end.notified().await;
    }
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
        if let Some(limits) = registry.limits_at.get_mut(&self.position) {
            if let btree_map::Entry::Occupied(mut count) = limits.entry(self.limit) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
            if limits.is_empty() {
                registry.limits_at.remove(&self.position);
            }
        }
        registry.by_age.remove(&(self.since, self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: FeedPosition = FeedPosition { tx: 9, id: 3 };

    fn readers(per_instance: usize, per_key: usize) -> WaitingReaders {
        WaitingReaders::new(WaitingBounds {
            per_instance,
            per_key,
        })
    }

    #[test]
    fn a_key_past_its_bound_is_refused_and_other_keys_wait_up_to_the_instance_s() {
        let readers = readers(3, 2);
        let first = readers.begin(1, AT, 10, None).unwrap();
        let _second = readers.begin(1, AT, 10, None).unwrap();
        assert_eq!(
            readers.begin(1, AT, 10, None).err(),
            Some(BoundReached::PerKey)
        );
        let _other = readers.begin(2, AT, 10, None).unwrap();
        assert_eq!(
            readers.begin(3, AT, 10, None).err(),
            Some(BoundReached::PerInstance)
        );
        drop(first);
        let _again = readers.begin(1, AT, 10, None).expect("a place given back");
        assert_eq!(readers.count(), 3);
    }

    #[test]
    fn the_largest_limit_waiting_at_a_position_is_the_one_a_shared_read_asks_for() {
        let readers = readers(10, 10);
        let elsewhere = FeedPosition { tx: 9, id: 4 };
        let small = readers.begin(1, AT, 5, None).unwrap();
        let large = readers.begin(2, AT, 700, None).unwrap();
        let _another_large = readers.begin(3, AT, 700, None).unwrap();
        let _larger_elsewhere = readers.begin(4, elsewhere, 1000, None).unwrap();
        assert_eq!(readers.largest_limit_at(AT), Some(700));
        drop(large);
        assert_eq!(readers.largest_limit_at(AT), Some(700), "one still asks");
        drop(small);
        assert_eq!(readers.largest_limit_at(AT), Some(700));
        assert_eq!(
            readers.largest_limit_at(FeedPosition { tx: 1, id: 1 }),
            None
        );
    }

    #[tokio::test]
    async fn the_longest_wait_on_a_connection_is_ended_first_and_only_once() {
        let readers = readers(10, 10);
        let _no_connection = readers.begin(1, AT, 10, None).unwrap();
        let oldest = readers.begin(1, AT, 10, Some(ConnectionId(7))).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let newer = readers.begin(2, AT, 10, Some(ConnectionId(8))).unwrap();

        assert_eq!(readers.end_longest_wait(), Some(ConnectionId(7)));
        oldest.ended().await;
        assert_eq!(readers.end_longest_wait(), Some(ConnectionId(8)));
        drop(newer);
        assert_eq!(readers.end_longest_wait(), None);
    }
}
