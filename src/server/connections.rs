//! The open connections: what each is doing, how long it may stay as it is, and which one
//! gives way when a new connection arrives with every place taken.
//!
//! A connection is either *busy* (its request has been read whole and its answer is not yet
//! written) or *waiting* (for the first byte of its next request, or for the rest of a request
//! head it has begun). Only busy connections are doing work for someone; a waiting one holds a
//! descriptor and nothing more. So:
//! - a busy connection is closed, answered or not, when its request has taken the request
//!   timeout (a body sent a byte at a time must not hold a place for ever);
//! - a waiting connection is closed when its time runs out: the idle timeout from the end of
//!   its last answer, the header-read timeout from the first byte of a request head (and, on a
//!   new connection, from its acceptance: it has had no answer to earn it the longer wait);
//! - when the cap is reached, the connection that has been waiting the longest is closed to
//!   make room, however busily it trickles header bytes: its wait counts from the end of its
//!   last answer (or its acceptance), and a byte of a request head does not restart it. A
//!   client holding many connections open therefore loses its own oldest ones to a newcomer,
//!   and cannot keep another client out. The newcomer is let in once that connection has
//!   closed (at once: it has nothing in progress), so the cap holds. When every connection
//!   is busy, a change feed reader waiting for events is busy with nothing but waiting: the
//!   one that has waited longest is answered at once (no events and its own cursor, a correct
//!   answer its client asks again after) and its connection closed after that answer. Only
//!   when no such reader is left does the accept loop wait longer, and then only until one
//!   connection finishes its answer (at most the request timeout);
//! - an answer counts as finished when hyper has written it all to the socket, not when it has
//!   taken the body: a client that reads nothing of a large answer stays busy, and is closed
//!   at the request timeout.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    task::AbortHandle,
    time::Instant,
};

use crate::app::waiting_readers::WaitingReaders;

/// How long connections may wait, between requests and while sending a request head.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
    /// How long a request may take from its head's arrival to the end of its answer: bounds a
    /// body sent a byte at a time, which would otherwise keep a connection busy for ever.
    pub request: Duration,
}

/// Where a timeout too long to reach ends: far enough never to matter, near enough for the
/// clock to hold (tokio's own "never" is as far).
const FAR_AWAY: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// The instant `timeout` after `now`; a timeout longer than [`FAR_AWAY`] (however large a
/// value was configured) ends there instead of overflowing the clock.
fn after(now: Instant, timeout: Duration) -> Instant {
    match now.checked_add(timeout) {
        Some(at) if timeout <= FAR_AWAY => at,
        _ => now + FAR_AWAY,
    }
}

/// All open connections, and how many may be open at once.
pub struct Connections {
    inner: Mutex<Registry>,
    /// Woken when a connection closes or stops being busy: the accept loop may find room, and
    /// the drain may find none left.
    changed: Notify,
    cap: usize,
    timeouts: Timeouts,
    /// The change feed's waiting readers, whose waits can be ended to free a connection; none
    /// where no reader can wait (the metrics' own listener).
    feed_waiting: Option<WaitingReaders>,
}

struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
    /// The waiting connections, by the time they began waiting: the first is the one to evict.
    waiting: BTreeMap<(Instant, u64), ()>,
}

impl Connections {
    pub fn new(cap: usize, timeouts: Timeouts, feed_waiting: Option<WaitingReaders>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Registry {
                next_id: 0,
                open: HashMap::new(),
                waiting: BTreeMap::new(),
            }),
            changed: Notify::new(),
            cap: cap.max(1),
            timeouts,
            feed_waiting,
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock; if something did, the map is still whole.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn count(&self) -> usize {
        self.registry().open.len()
    }

    /// Waits until one more connection may be opened: at once below the cap; at the cap, after
    /// asking the connection that has waited longest to close, until it has; with every
    /// connection busy, after ending the wait of the change feed reader that has waited longest
    /// and asking its connection to close after the answer, until it has; with none left, until
    /// a connection is not busy.
    pub async fn make_room(&self) {
        let mut said = false;
        let mut asked = None;
        let mut answering = None;
        loop {
            let changed = self.changed.notified();
            let victim = {
                let mut registry = self.registry();
                if registry.open.len() < self.cap {
                    return;
                }
                loop {
                    let Some((since, id)) = registry.waiting.keys().next().copied() else {
                        break None;
                    };
                    match registry.open.get(&id) {
                        Some(victim) => break Some((since, Arc::clone(victim))),
                        // Not open: nothing to close. Never left behind by a closing
                        // connection, but a stale entry must not stop the search.
                        None => {
                            registry.waiting.remove(&(since, id));
                        }
                    }
                }
            };
            // The entry stays until the victim's task ends and `Connection::closed` takes it
            // off: only then is its place free, and until then it is asked again (a request
            // that began meanwhile takes it off the waiting ones, and the next is asked).
            if let Some((since, victim)) = victim {
                if asked != Some(victim.id) {
                    tracing::debug!(
                        connection = victim.id,
                        waited_ms = since.elapsed().as_millis() as u64,
                        "at the connection cap: closing the connection that has waited longest"
                    );
                    asked = Some(victim.id);
                }
                victim.request_close();
                changed.await;
                continue;
            }
            // Every connection is busy. A reader whose wait was ended is answering: its place
            // comes free once it has, and no other reader's wait is ended for this newcomer.
            if let Some(reader) = &answering
                && self.registry().open.contains_key(reader)
            {
                changed.await;
                continue;
            }
            if let Some(reader) = self
                .feed_waiting
                .as_ref()
                .and_then(WaitingReaders::end_longest_wait)
            {
                // Gone already if its request ended meanwhile: then it has made room, or
                // another is asked.
                let victim = self.registry().open.get(&reader.0).cloned();
                if let Some(victim) = victim {
                    tracing::debug!(
                        connection = victim.id,
                        "at the connection cap with every connection busy: answering the change feed reader that has waited longest"
                    );
                    victim.request_close();
                    answering = Some(victim.id);
                    changed.await;
                }
                continue;
            }
            if !said {
                tracing::warn!(
                    cap = self.cap,
                    "every connection is busy at the connection cap: waiting for one to finish"
                );
                said = true;
            }
            changed.await;
        }
    }

    /// Registers a newly accepted connection.
    pub fn open(self: &Arc<Self>) -> Arc<Connection> {
        let now = Instant::now();
        let mut registry = self.registry();
        let id = registry.next_id;
        registry.next_id += 1;
        let connection = Arc::new(Connection {
            id,
            connections: Arc::clone(self),
            state: Mutex::new(State {
                phase: Phase::Waiting {
                    since: now,
                    deadline: after(now, self.timeouts.header_read),
                    reading_head: true,
                },
                unflushed: false,
                answered: false,
                close_requested: false,
                closed: false,
            }),
            wake: Notify::new(),
            abort: Mutex::new(None),
        });
        registry.open.insert(id, Arc::clone(&connection));
        registry.waiting.insert((now, id), ());
        connection
    }

    /// Asks every connection to close: at once when waiting, after its answer when busy.
    pub fn close_all(&self) {
        let open: Vec<_> = self.registry().open.values().cloned().collect();
        for connection in open {
            connection.request_close();
        }
    }

    /// Ends every connection's task, whatever it is doing.
    pub fn abort_all(&self) {
        for connection in self.registry().open.values() {
            if let Some(abort) = connection
                .abort
                .lock()
                .ok()
                .and_then(|handle| handle.clone())
            {
                abort.abort();
            }
        }
    }

    /// Waits until no connection is open.
    pub async fn closed(&self) {
        loop {
            let changed = self.changed.notified();
            if self.registry().open.is_empty() {
                return;
            }
            changed.await;
        }
    }

    fn remove(&self, id: u64, since: Option<Instant>) {
        let mut registry = self.registry();
        registry.open.remove(&id);
        if let Some(since) = since {
            registry.waiting.remove(&(since, id));
        }
        drop(registry);
        self.changed.notify_one();
    }
}

/// One open connection: the state its serving task, its socket and its requests share.
pub struct Connection {
    pub id: u64,
    connections: Arc<Connections>,
    state: Mutex<State>,
    /// Wakes the serving task to look at the state again.
    wake: Notify,
    abort: Mutex<Option<AbortHandle>>,
}

struct State {
    phase: Phase,
    /// Bytes written that the socket has not yet been flushed of: closing now could lose the
    /// end of an answer.
    unflushed: bool,
    /// The busy request's answer has been handed to hyper whole: once hyper has written it
    /// all, the connection is waiting. Until then the request timeout still holds, so a
    /// client that never reads its answer cannot hold the connection.
    answered: bool,
    close_requested: bool,
    /// The connection's task has ended: a request finishing afterwards must not register it
    /// as waiting again.
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Waiting {
        /// When the connection began waiting: accepted, or its last answer written.
        since: Instant,
        /// When it is closed if its next request's head has not arrived whole.
        deadline: Instant,
        /// Whether a byte of the next request head has arrived (or it is new).
        reading_head: bool,
    },
    Busy {
        /// When the connection is closed, answered or not.
        deadline: Instant,
    },
}

/// What the serving task should do about its connection now.
pub enum Next {
    /// Keep serving; look again at `deadline`, if any, or when woken.
    Serve { deadline: Option<Instant> },
    /// Let the answer in progress finish, then close; close anyway at `deadline`.
    FinishThenClose { deadline: Instant },
    /// Close at once: nothing is in progress that closing would lose.
    CloseNow(Reason),
}

#[derive(Debug, Clone, Copy)]
pub enum Reason {
    Requested,
    TimedOut { reading_head: bool },
}

impl Connection {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_abort_handle(&self, handle: AbortHandle) {
        if let Ok(mut abort) = self.abort.lock() {
            *abort = Some(handle);
        }
    }

    /// Resolves when something the serving task should look at has changed.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn request_close(&self) {
        self.state().close_requested = true;
        self.wake.notify_one();
    }

    /// What to do now, at `now`.
    pub fn next(&self, now: Instant) -> Next {
        let state = self.state();
        let closable = !state.unflushed;
        match state.phase {
            Phase::Busy { deadline } if deadline <= now => Next::CloseNow(Reason::TimedOut {
                reading_head: false,
            }),
            Phase::Busy { deadline } if state.close_requested => Next::FinishThenClose { deadline },
            Phase::Busy { deadline } => Next::Serve {
                deadline: Some(deadline),
            },
            Phase::Waiting {
                deadline,
                reading_head,
                ..
            } if deadline <= now => Next::CloseNow(Reason::TimedOut { reading_head }),
            // Bytes hyper wrote of its own (an answer to a malformed head) go out first, but
            // no longer than the connection may wait.
            Phase::Waiting { .. } if state.close_requested && closable => {
                Next::CloseNow(Reason::Requested)
            }
            Phase::Waiting { deadline, .. } => Next::Serve {
                deadline: Some(deadline),
            },
        }
    }

    /// A request head has arrived whole and its handler starts: the connection is busy until
    /// the returned guard is dropped (when the answer's body has been handed over whole) and
    /// hyper has then written out all it holds.
    pub fn begin_request(self: &Arc<Self>) -> BusyGuard {
        let since = {
            let mut state = self.state();
            state.answered = false;
            let busy = Phase::Busy {
                deadline: after(Instant::now(), self.connections.timeouts.request),
            };
            match std::mem::replace(&mut state.phase, busy) {
                Phase::Waiting { since, .. } => Some(since),
                Phase::Busy { .. } => None,
            }
        };
        if let Some(since) = since {
            self.connections
                .registry()
                .waiting
                .remove(&(since, self.id));
        }
        // The serving task is timing the wait for this head: it must time the request now.
        self.wake.notify_one();
        BusyGuard(Some(Arc::clone(self)))
    }

    /// The answer's body has been handed over whole (or dropped): the connection waits once
    /// hyper has flushed what it holds of it, which it does right after taking the body's end.
    fn end_request(&self) {
        let mut state = self.state();
        if !state.closed && matches!(state.phase, Phase::Busy { .. }) {
            state.answered = true;
        }
    }

    /// Everything written has reached the kernel: an answered request is over.
    fn answer_written(&self, mut state: MutexGuard<'_, State>) {
        let now = Instant::now();
        state.answered = false;
        state.phase = Phase::Waiting {
            since: now,
            deadline: after(now, self.connections.timeouts.idle),
            reading_head: false,
        };
        drop(state);
        // `closed` may run between the two locks; it takes the connection off `open` first.
        let mut registry = self.connections.registry();
        if registry.open.contains_key(&self.id) {
            registry.waiting.insert((now, self.id), ());
        }
        drop(registry);
        self.connections.changed.notify_one();
        self.wake.notify_one();
    }

    /// Bytes arrived: on a connection waiting between requests, the next head has begun.
    fn bytes_read(&self) {
        let mut state = self.state();
        if let Phase::Waiting {
            deadline,
            reading_head: reading_head @ false,
            ..
        } = &mut state.phase
        {
            *reading_head = true;
            *deadline = after(Instant::now(), self.connections.timeouts.header_read);
            drop(state);
            self.wake.notify_one();
        }
    }

    fn wrote(&self) {
        self.state().unflushed = true;
    }

    fn flushed(&self) {
        let mut state = self.state();
        if state.answered && !state.closed && matches!(state.phase, Phase::Busy { .. }) {
            state.unflushed = false;
            self.answer_written(state);
        } else if state.unflushed {
            state.unflushed = false;
            drop(state);
            self.wake.notify_one();
        }
    }

    /// The connection's task has ended: it no longer counts.
    pub fn closed(&self) {
        let since = {
            let mut state = self.state();
            state.closed = true;
            match state.phase {
                Phase::Waiting { since, .. } => Some(since),
                Phase::Busy { .. } => None,
            }
        };
        self.connections.remove(self.id, since);
    }
}

/// Keeps a connection busy while it lives.
pub struct BusyGuard(Option<Arc<Connection>>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            connection.end_request();
        }
    }
}

/// The most a connection's socket is read at once (see `Watched::poll_read`).
const READ_CHUNK: usize = 64 * 1024;

/// A connection's socket, telling the connection when bytes arrive and when written bytes
/// have all been handed to the kernel.
pub struct Watched<S> {
    inner: S,
    connection: Arc<Connection>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, connection: Arc<Connection>) -> Self {
        Self { inner, connection }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // hyper checks its limit on a request head's size only between reads, so a head that
        // arrived whole in one large read would pass however large it is. Read at most
        // `READ_CHUNK` at a time, and no head more than that over the limit gets through.
        // The chunk is a view of `buf`'s unfilled part as it is, not zeroed first: hyper hands
        // over tens of KiB of fresh buffer per read, and zeroing them cost about an eighth
        // of a small request's instructions.
        let mut chunk = buf.take(READ_CHUNK);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut chunk);
        let read = chunk.filled().len();
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            // SAFETY: the `read` bytes at the start of `buf`'s unfilled part are the ones
            // `chunk` (a view of that part) reports as filled, so they are initialised.
            unsafe { buf.assume_init(read) };
            buf.advance(read);
            self.connection.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.connection.wrote();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.connection.wrote();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if polled.is_ready() {
            self.connection.flushed();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An answer's body that keeps its connection busy until it has been read whole (or dropped)
/// and written out.
pub struct BusyBody {
    inner: BoxBody<Bytes, io::Error>,
    guard: Option<BusyGuard>,
}

impl BusyBody {
    pub fn new(inner: BoxBody<Bytes, io::Error>, guard: Option<BusyGuard>) -> Self {
        Self { inner, guard }
    }
}

impl Body for BusyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
