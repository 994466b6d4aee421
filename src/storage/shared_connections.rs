//! A few database connections that many reads use at once.
//!
//! A pooled connection carries one request's statement at a time: the request sends it, the
//! server runs it and answers, and only then can the next request use the connection. Every
//! statement thus costs the server a wake-up, a read and a write of its own, which for a read
//! of one order is more than the read itself. tokio-postgres sends the statements of
//! different tasks down one connection one after another without waiting for the answers in
//! between (pipelining), and the server then reads several at once and answers them in one
//! write: measured here, the server did about twice as many small reads a second this way.
//! So reads whose answers are small (see [`super::Reader`]) go down one of a few *shared*
//! connections, the least busy; everything else, and every write (a transaction needs a
//! connection of its own), takes a connection from the pool.
//!
//! A statement on a shared connection waits for a table's lock for [`SHARED_LOCK_WAIT`] at
//! most (a read takes only `ACCESS SHARE`, which nothing but a migration's, a `VACUUM FULL`'s
//! or an operator's `LOCK TABLE` holds up): past it, the read is asked again on a pooled
//! connection, where it waits up to the lock timeout alone. So a lock on one table costs the
//! reads of other tables queued behind a read of it a few milliseconds, not the lock timeout
//! once for every read queued ahead.
//!
//! A shared connection is only used while it works. One that breaks, or whose statement is
//! cut off with no answer at all from the server (a hung server, see [`super::within`]), is
//! closed and opened again in the background, and until then reads take pooled connections,
//! which answer every fault as the rest of the service does. One that has answered nothing for
//! [`STALL`] while reads wait on it (a lock held on a table, a slow statement) gets no new
//! reads until it answers again: they would queue behind the stalled one.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tokio_postgres::{Row, Statement, types::ToSql};

use super::Connector;

/// How long a shared connection may answer nothing while reads wait on it before new reads
/// go elsewhere: far longer than any read it carries takes, far shorter than a lock timeout.
pub const STALL: Duration = Duration::from_millis(100);

/// How long a statement on a shared connection waits for a lock before it is asked again on a
/// pooled connection: a few times what taking an uncontended lock costs, and short enough that
/// a dozen reads of a locked table queued on one connection hold the rest up briefly.
pub const SHARED_LOCK_WAIT: Duration = Duration::from_millis(5);

/// How long a statement must have waited, with no answer on its connection meanwhile, before
/// its being given up (cut off by the answer bound) means the server is not answering.
const GIVEN_UP_AFTER: Duration = Duration::from_millis(500);

/// The first and the longest pause between attempts to open a shared connection.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// How long an attempt to open a shared connection may take.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

/// The shared connections of one instance. Cheap to clone.
#[derive(Clone)]
pub struct SharedConnections(Arc<Shared>);

struct Shared {
    connector: Connector,
    slots: Vec<RwLock<Option<Arc<Session>>>>,
    /// Wakes the keeper: a connection was given up.
    lost: Notify,
    /// Where the sessions' clocks start.
    epoch: Instant,
}

/// One open shared connection.
struct Session {
    client: tokio_postgres::Client,
    /// The task that drives the connection: aborted to close it at once, answers pending or not.
    driver: tokio::task::AbortHandle,
    /// Statements prepared on this connection, by the address of their (static) SQL text.
    statements: Mutex<HashMap<usize, Statement>>,
    in_flight: AtomicUsize,
    /// Statements the server has answered (with rows or an error).
    answered: AtomicU64,
    /// When the connection last made progress: an answer, or work arriving while it had none
    /// (nanoseconds since [`Shared::epoch`]).
    progressed_at: AtomicU64,
    /// Set when it must not be used again.
    given_up: std::sync::atomic::AtomicBool,
}

impl SharedConnections {
    /// `count` shared connections opened by `connector`, none open yet: reads use them once
    /// [`SharedConnections::spawn_keeper`] has opened them.
    pub fn new(connector: Connector, count: usize) -> Self {
        Self(Arc::new(Shared {
            connector: connector.for_shared_reads(),
            slots: (0..count).map(|_| RwLock::new(None)).collect(),
            lost: Notify::new(),
            epoch: Instant::now(),
        }))
    }

    /// How many there are meant to be, and how many are open and usable now.
    pub fn status(&self) -> (usize, usize) {
        let open = self
            .0
            .slots
            .iter()
            .filter(|slot| read(slot).as_ref().is_some_and(|session| session.usable()))
            .count();
        (self.0.slots.len(), open)
    }

    /// Opens the shared connections, and opens again any that is given up, until the returned
    /// task is aborted (or every handle to these connections is gone).
    pub fn spawn_keeper(&self) -> tokio::task::JoinHandle<()> {
        let shared = Arc::clone(&self.0);
        tokio::spawn(async move {
            let mut retry = FIRST_RETRY;
            loop {
                let lost = shared.lost.notified();
                tokio::pin!(lost);
                // Listening before looking, so a loss while connections open is not missed.
                lost.as_mut().enable();
                if shared.open_missing().await {
                    retry = FIRST_RETRY;
                    lost.await;
                } else {
                    tokio::select! {
                        () = lost => {}
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(LONGEST_RETRY);
                }
            }
        })
    }

    /// Runs `sql` on the least busy usable shared connection; `None` when there is none (none
    /// open, or all stalled), for the caller to use a pooled one instead. A connection that
    /// broke under the statement is given up, and the statement's error returned.
    pub async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Option<Result<Vec<Row>, tokio_postgres::Error>> {
        let session = self.0.least_busy()?;
        let mut in_flight = InFlight::begin(&self.0, &session);
        let outcome = async {
            let statement = session.statement(sql).await?;
            session.client.query(&statement, params).await
        }
        .await;
        in_flight.answered();
        if session.client.is_closed() {
            self.0.give_up(&session);
        }
        Some(outcome)
    }
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The usable connection with the fewest statements waiting, stalled ones left out. One
    /// found closed (the server ended it, or the network did) is given up on the way.
    fn least_busy(&self) -> Option<Arc<Session>> {
        let stalled_before = self.now().saturating_sub(STALL.as_nanos() as u64);
        let mut chosen: Option<(usize, Arc<Session>)> = None;
        for slot in &self.slots {
            let Some(session) = read(slot).clone() else {
                continue;
            };
            if !session.usable() {
                self.give_up(&session);
                continue;
            }
            let waiting = session.in_flight.load(Ordering::Relaxed);
            let stalled =
                waiting > 0 && session.progressed_at.load(Ordering::Relaxed) < stalled_before;
            if !stalled && chosen.as_ref().is_none_or(|(fewest, _)| waiting < *fewest) {
                chosen = Some((waiting, session));
            }
        }
        chosen.map(|(_, session)| session)
    }

    /// Closes `session` at once (its pending statements fail) and has the keeper open another.
    fn give_up(&self, session: &Arc<Session>) {
        if session.given_up.swap(true, Ordering::AcqRel) {
            return;
        }
        session.driver.abort();
        for slot in &self.slots {
            let mut current = slot.write().unwrap_or_else(|e| e.into_inner());
            if current
                .as_ref()
                .is_some_and(|held| Arc::ptr_eq(held, session))
            {
                *current = None;
            }
        }
        tracing::warn!("a shared database connection stopped answering or broke; opening another");
        self.lost.notify_one();
    }

    /// Opens a connection in every empty slot; says whether all are open now.
    async fn open_missing(&self) -> bool {
        let mut all_open = true;
        for slot in &self.slots {
            if read(slot).as_ref().is_some_and(|session| session.usable()) {
                continue;
            }
            match tokio::time::timeout(CONNECT_BOUND, self.connector.connect_driven()).await {
                Ok(Ok((client, driver))) => {
                    let session = Arc::new(Session {
                        client,
                        driver,
                        statements: Mutex::default(),
                        in_flight: AtomicUsize::new(0),
                        answered: AtomicU64::new(0),
                        progressed_at: AtomicU64::new(self.now()),
                        given_up: std::sync::atomic::AtomicBool::new(false),
                    });
                    *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(session);
                }
                Ok(Err(error)) => {
                    tracing::debug!(error = %crate::telemetry::error_chain(&error), "could not open a shared database connection");
                    all_open = false;
                }
                Err(_) => {
                    tracing::debug!("opening a shared database connection timed out");
                    all_open = false;
                }
            }
        }
        all_open
    }
}

impl Session {
    fn usable(&self) -> bool {
        !self.given_up.load(Ordering::Acquire) && !self.client.is_closed()
    }

    /// `sql` prepared on this connection: once, then from the cache.
    async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        let key = sql.as_ptr() as usize;
        if let Some(statement) = self.statements().get(&key) {
            return Ok(statement.clone());
        }
        // Two first uses at once may both prepare it; the second is kept, the first dropped
        // (and closed on the server when its last user is done).
        let statement = self.client.prepare(sql).await?;
        self.statements().insert(key, statement.clone());
        Ok(statement)
    }

    fn statements(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Statement>> {
        self.statements.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A statement waiting on a shared connection. If it is given up before the server answered
/// it (its request cut off by the answer bound), having waited a while with no answer to
/// anyone on its connection meanwhile, the server is taken for hung and the connection given
/// up: the statements queued behind it would wait for ever too.
struct InFlight<'a> {
    shared: &'a Shared,
    session: &'a Arc<Session>,
    answered_before: u64,
    began: Instant,
    done: bool,
}

impl<'a> InFlight<'a> {
    fn begin(shared: &'a Shared, session: &'a Arc<Session>) -> Self {
        if session.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            // Idle until now: its wait for an answer starts here.
            session.progressed_at.store(shared.now(), Ordering::Relaxed);
        }
        Self {
            shared,
            session,
            answered_before: session.answered.load(Ordering::Acquire),
            began: Instant::now(),
            done: false,
        }
    }

    fn answered(&mut self) {
        self.done = true;
        self.session.answered.fetch_add(1, Ordering::AcqRel);
        self.session
            .progressed_at
            .store(self.shared.now(), Ordering::Relaxed);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.session.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.done
            && self.began.elapsed() >= GIVEN_UP_AFTER
            && self.session.answered.load(Ordering::Acquire) == self.answered_before
        {
            self.shared.give_up(self.session);
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}
