//! Reading the change feed (see [`crate::storage::events`] for how it is written and why its
//! order holds), waiting for what comes next (long polling), and purging what is past the
//! retention period.
//!
//! Waiting readers hold no database connection. While any reader waits, each instance's
//! watcher asks the database for the feed's head (the newest event readers may be given)
//! every [`WATCH_INTERVAL`], on a session of its own, and publishes it in a [`FeedWatch`]. A
//! waiting reader sleeps on that watch and reads the feed, through the pool, only once the
//! head has moved past its position; readers woken together at the same position share that
//! read, of the largest page any of them asks for, and each takes its own page from the
//! front of it. So a reader learns of an event within about that interval of its becoming
//! readable, wherever it was written, and what it is given is always read from the table.
//!
//! How many readers may wait, and whose wait ends first when the server needs a connection
//! back, is decided in [`super::waiting_readers`]. A wait that is refused or ended early is
//! answered as a wait that ran out is: no events and the reader's own cursor.
//!
//! Why not `LISTEN`/`NOTIFY`: a transaction that notifies takes a lock that every other
//! notifying transaction of the cluster waits for, held until its commit is on disk, so commits
//! that notify are flushed one at a time. Measured with pgbench on the create's own SQL, a
//! trigger notifying on each write of events cut creates from about 5,700 to 1,800 a second.
//! Asking for the head costs one index probe per interval, and nothing while nobody waits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::{Notify, OnceCell, watch};

use super::{
    AppError, AppState,
    authentication::Caller,
    waiting_readers::{BoundReached, ConnectionId, WaitingBounds, WaitingReaders},
};
use crate::{
    domain::{FeedPage, FeedPosition, FeedStart},
    storage::{self, Connector, events::StartRefused},
    telemetry::metrics::{self, FeedRead, WaitCutShort},
};

/// The longest a reader may ask to wait for events.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How often the watcher asks for the head while readers wait: well inside the 100 ms in
/// which a waiting reader should learn of an event, at one index probe each time.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// The first and the longest pause before the watcher tries its session again.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The events a caller may be given now after `start`, at most `limit`.
pub async fn read(state: &AppState, start: FeedStart, limit: usize) -> Result<FeedPage, AppError> {
    let read = state
        .bounded(async { Ok(storage::events::read(&state.reader, start, limit).await?) })
        .await?;
    read.map_err(|refused| match refused {
        StartRefused::NeverIssued => AppError::UnknownCursor,
        StartRefused::Purged => AppError::CursorExpired,
    })
}

/// [`read`], but when there is nothing to give yet, waits up to `wait` for events to arrive
/// and reads again, for `caller`, whose request came on `connection`. Answers with an empty
/// page (and the same cursor) when `wait` passes; at once when the caller's key or the
/// instance has as many readers waiting as it may; when the server ends the wait to have the
/// connection back; or when the instance's listener closes as it shuts down (the caller asks
/// again, of an instance still serving). `before_waiting` runs once, if it comes to waiting:
/// to give up what the caller holds.
pub async fn read_waiting(
    state: &AppState,
    caller: &Caller,
    start: FeedStart,
    limit: usize,
    wait: Duration,
    connection: Option<ConnectionId>,
    before_waiting: impl FnOnce(),
) -> Result<FeedPage, AppError> {
    let deadline = tokio::time::Instant::now() + wait.min(state.longest_feed_wait);
    // Before the first read, so a head published between it and the wait is not missed.
    let mut heads = state.feed.subscribe();
    FeedRead::First.count();
    let page = read(state, start, limit).await?;
    if !page.events.is_empty() || wait.is_zero() {
        return Ok(page);
    }
    let position = page.next;
    let waiting = match state
        .feed
        .waiting
        .begin(caller.key_id, position, limit, connection)
    {
        Ok(waiting) => waiting,
        Err(bound) => {
            match bound {
                BoundReached::PerKey => WaitCutShort::PerKey,
                BoundReached::PerInstance => WaitCutShort::PerInstance,
            }
            .count();
            return Ok(page);
        }
    };
    let ended = waiting.ended();
    let listener_closed = state.draining.until_listener_closed();
    tokio::pin!(ended, listener_closed);
    let _counted = metrics::feed_reader_waits();
    before_waiting();
    loop {
        tokio::select! {
            changed = heads.changed() => if changed.is_err() {
                break; // The head's sender is gone with the state: nothing more will come.
            },
            () = tokio::time::sleep_until(deadline) => break,
            () = &mut ended => {
                WaitCutShort::ConnectionCap.count();
                break;
            }
            () = &mut listener_closed => {
                WaitCutShort::Shutdown.count();
                break;
            }
        }
        let head = *heads.borrow_and_update();
        if head <= position {
            continue;
        }
        let page = state.feed.read_woken(state, position, limit, head).await?;
        if !page.events.is_empty() {
            return Ok(page);
        }
    }
    Ok(FeedPage {
        events: Vec::new(),
        next: position,
    })
}

/// The newest position of the feed readers may be given, as this instance last read it, for
/// waiting readers to sleep on; the readers waiting; and the reads that readers woken together
/// share. Cheap to clone.
#[derive(Clone)]
pub struct FeedWatch {
    head: Arc<watch::Sender<FeedPosition>>,
    /// Told when a reader subscribes, so that a watcher with no one to watch for can sleep.
    reader_arrived: Arc<Notify>,
    /// Who waits, within the instance's bounds.
    pub waiting: WaitingReaders,
    /// The reads a reader may still come for: those of readers woken by the head published
    /// last, kept until the next (the readers it woke take their pages one after another, and
    /// a read given up by those that came first would be read again for those that come
    /// later), and those of earlier heads that a reader still holds.
    shared_reads: Arc<Mutex<HashMap<WokenRead, Arc<SharedRead>>>>,
}

/// A read by readers woken by the same head, from the same position: one of them reads, for
/// as many events as the largest page any reader waiting there asks for, and each takes its
/// page from the front. Keyed by the head too, so a reader woken later never takes a page read
/// before its wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct WokenRead {
    after: FeedPosition,
    head: FeedPosition,
}

/// The outcome of a [`WokenRead`], once read. A failure is shared too: when the database is
/// slow or gone, a thousand readers retrying for themselves would only add to its load.
type SharedRead = OnceCell<Result<FeedPage, Arc<AppError>>>;

/// A shared read's failure, as the cause of each of its readers' errors.
#[derive(Debug, thiserror::Error)]
#[error("a read shared by readers woken together failed: {0}")]
struct SharedFailure(Arc<AppError>);

/// The error a reader of a failed shared read answers with: the same kind as the read's own.
fn failure_of_shared_read(error: &Arc<AppError>) -> AppError {
    let cause = || Box::new(SharedFailure(Arc::clone(error)));
    match **error {
        AppError::UnknownCursor => AppError::UnknownCursor,
        AppError::CursorExpired => AppError::CursorExpired,
        AppError::Unavailable(_) => AppError::Unavailable(cause()),
        AppError::TimedOut(_) => AppError::TimedOut(cause()),
        AppError::Contended(_) => AppError::Contended(cause()),
        _ => AppError::Internal(cause()),
    }
}

impl FeedWatch {
    /// The watch of an instance that holds as many readers waiting as `bounds` allow.
    pub fn new(bounds: WaitingBounds) -> Self {
        Self {
            head: Arc::new(watch::Sender::new(FeedPosition::START)),
            reader_arrived: Arc::default(),
            waiting: WaitingReaders::new(bounds),
            shared_reads: Arc::default(),
        }
    }

    /// For a reader that may wait: the head as it moves. The watcher watches while any such
    /// receiver lives.
    fn subscribe(&self) -> watch::Receiver<FeedPosition> {
        let heads = self.head.subscribe();
        self.reader_arrived.notify_one();
        heads
    }

    /// Returns once a reader may be waiting: at once if one holds a receiver, else when one
    /// subscribes.
    async fn until_readers(&self) {
        // Armed before looking, so a reader subscribing in between is not missed.
        let arrived = self.reader_arrived.notified();
        if self.head.receiver_count() == 0 {
            arrived.await;
        }
    }

    /// The read of a reader woken by `head`, for at most `limit` events: one database read for
    /// all the readers woken by it at the same position (a thousand consumers tailing the feed
    /// are all at the head), whatever their limits, so that a wake-up costs the pool one query,
    /// not one per reader or per limit. A reader that began waiting after the read began, with
    /// a larger limit than it read, gets the shorter page: fewer events than asked for is
    /// always a correct page, and its next read goes on from there.
    async fn read_woken(
        &self,
        state: &AppState,
        after: FeedPosition,
        limit: usize,
        head: FeedPosition,
    ) -> Result<FeedPage, AppError> {
        let shared = self.shared_read(WokenRead { after, head });
        let outcome = shared
            .get_or_init(|| async {
                let largest = self.waiting.largest_limit_at(after).unwrap_or(0).max(limit);
                FeedRead::Woken.count();
                read(state, FeedStart::After(after), largest)
                    .await
                    .map_err(Arc::new)
            })
            .await;
        match outcome {
            Ok(page) => Ok(front_of(page, limit)),
            Err(error) => Err(failure_of_shared_read(error)),
        }
    }

    /// The shared read for `key`: the one in progress or done, if it is kept (see
    /// [`FeedWatch::shared_reads`]); else a new one.
    fn shared_read(&self, key: WokenRead) -> Arc<SharedRead> {
        Arc::clone(self.shared_reads().entry(key).or_default())
    }

    fn shared_reads(&self) -> MutexGuard<'_, HashMap<WokenRead, Arc<SharedRead>>> {
        // Nothing panics while holding the lock; if something did, the map is still whole.
        self.shared_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the head forward (never back), waking the readers that wait, and lets go of the
    /// reads of earlier heads that no reader holds: a reader woken now reads anew.
    fn publish(&self, head: FeedPosition) {
        let moved = self.head.send_if_modified(|current| {
            let moved = head > *current;
            if moved {
                *current = head;
            }
            moved
        });
        if moved {
            self.shared_reads()
                .retain(|_, shared| Arc::strong_count(shared) > 1);
        }
    }
}

/// The first `limit` events of `page`, and the cursor after the last of them.
fn front_of(page: &FeedPage, limit: usize) -> FeedPage {
    let events = &page.events[..limit.min(page.events.len())];
    FeedPage {
        next: events.last().map_or(page.next, |event| event.position),
        events: events.to_vec(),
    }
}

/// Keeps [`AppState::feed`] current while readers wait, on a session `connector` opens (when
/// the first reader comes), until aborted; a session that breaks, or cannot be opened, is
/// opened again, with back-off.
pub fn spawn_watcher(state: &AppState, connector: Connector) -> tokio::task::JoinHandle<()> {
    let feed = state.feed.clone();
    let bound = state.answer_bound;
    tokio::spawn(async move {
        let mut delay = FIRST_RECONNECT_DELAY;
        loop {
            feed.until_readers().await;
            let (error, worked) = watch_one_session(&feed, &connector, bound).await;
            if worked {
                delay = FIRST_RECONNECT_DELAY; // A new fault, not the same one again.
            }
            tracing::warn!(
                error = %crate::telemetry::error_chain(&error),
                retry_in = ?delay,
                "the change feed's watcher cannot read the head; waiting readers are answered at their deadline until it can"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
        }
    })
}

/// Opens a session and, while readers wait, publishes the head every [`WATCH_INTERVAL`]; the
/// session stays open in between. Returns the error that ended it, and whether it had read the
/// head at least once.
async fn watch_one_session(
    feed: &FeedWatch,
    connector: &Connector,
    bound: Duration,
) -> (storage::StoreError, bool) {
    let session = async {
        let client = storage::answered_within(bound, connector.connect()).await?;
        let head =
            storage::answered_within(bound, storage::events::HeadQuery::prepare(&client)).await?;
        Ok::<_, storage::StoreError>((client, head))
    };
    let (client, head) = match session.await {
        Ok(session) => session,
        Err(error) => return (error, false),
    };
    let mut ticks = tokio::time::interval(WATCH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut worked = false;
    loop {
        feed.until_readers().await;
        ticks.tick().await;
        match storage::answered_within(bound, head.ask(&client)).await {
            Ok(position) => feed.publish(position),
            Err(error) => return (error, worked),
        }
        worked = true;
    }
}

/// Purges events older than [`AppState::event_retention`] in the background, until aborted.
pub fn spawn_purger(state: &AppState) -> tokio::task::JoinHandle<()> {
    super::spawn_purger(
        state,
        state.event_retention,
        storage::events::PURGE_BATCH,
        "events past their retention",
        |pool, retention| async move { storage::events::purge_expired_batch(&pool, retention).await },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reader_of_a_failed_shared_read_gets_an_error_of_its_kind() {
        let shared = |error| failure_of_shared_read(&Arc::new(error));
        assert!(matches!(
            shared(AppError::CursorExpired),
            AppError::CursorExpired
        ));
        assert!(matches!(
            shared(AppError::UnknownCursor),
            AppError::UnknownCursor
        ));
        assert!(matches!(
            shared(AppError::TimedOut("slow".into())),
            AppError::TimedOut(_)
        ));
        assert!(matches!(
            shared(AppError::Unavailable("down".into())),
            AppError::Unavailable(_)
        ));
        assert!(matches!(
            shared(AppError::Internal("bug".into())),
            AppError::Internal(_)
        ));
    }

    #[test]
    fn a_shared_read_is_kept_for_later_readers_until_the_head_moves_unless_one_holds_it() {
        let feed = FeedWatch::new(WaitingBounds {
            per_instance: 10,
            per_key: 10,
        });
        let head = FeedPosition { tx: 2, id: 0 };
        feed.publish(head);
        let key = |id| WokenRead {
            after: FeedPosition { tx: 1, id },
            head,
        };
        let held = feed.shared_read(key(0));
        let given_up = feed.shared_read(key(1));
        let given_up_at = Arc::as_ptr(&given_up);
        drop(given_up);
        assert!(
            Arc::ptr_eq(&held, &feed.shared_read(key(0))),
            "one read per key"
        );
        assert_eq!(
            Arc::as_ptr(&feed.shared_read(key(1))),
            given_up_at,
            "kept for the readers of the same head still to come"
        );

        feed.publish(FeedPosition { tx: 3, id: 0 });

        assert!(
            Arc::ptr_eq(&held, &feed.shared_read(key(0))),
            "a held read is kept"
        );
        assert_eq!(feed.shared_reads().len(), 1, "the others are let go");
    }
}
