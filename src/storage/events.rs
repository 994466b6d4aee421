//! The change feed's table: events written by the statements that make the changes, and the
//! read that hands them out in an order no later commit can break.
//!
//! Each write of an order or a service records its event in the same statement (a CTE beside
//! the write), so the event commits or rolls back with the change and costs no extra round
//! trip. The event's `data` is the record as storage reads it, as a JSON document built by
//! the SQL in this module; the HTTP layer shows it exactly as `GET` shows the record.
//!
//! Ordering: an event's id is handed out before its transaction commits, so a reader that
//! took "everything up to id n" could miss an id below n committed later. The feed therefore
//! orders by (transaction id, event id) and hands out only events of transactions older than
//! the oldest transaction still running: every transaction with a smaller id has ended by
//! then, so nothing can later appear behind a cursor. Writes of one record get transaction
//! ids in the order they commit (each write of an existing record takes a lock on it first,
//! see `super::holding_record_lock`), so a record's events come in the order its changes took
//! effect.
//!
//! Retention: events past the retention period are deleted from the start of the feed, a
//! prefix at a time, by the statement that also moves the `event_horizon` row to the last one
//! deleted. A position before the horizon is therefore one whose next events are gone, and a
//! read from it is refused ([`StartRefused::Purged`]) rather than answered with a gap.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::{
    Reader, SHARED_PAGE_LIMIT, StoreError,
    shared_sql::{order_from_document, service_from_document},
};
use crate::domain::{
    EventRecord, EventSubject, EventType, FeedPage, FeedPosition, FeedStart, Timestamp,
};

/// Why a read cannot start where it was asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefused {
    /// The position is neither the feed's start, nor its horizon, nor an event's.
    NeverIssued,
    /// The position is before the horizon: the events after it are purged.
    Purged,
}

/// The read of one page of the feed: `$1` is how the read starts (`oldest`, `now` or `after`,
/// then at (`$2`, `$3`)), `$4` the most events. Public so that tests can check its plan.
pub const READ_PAGE: &str = "WITH bound AS (
                 SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS visible_below
             ), head AS (
                 SELECT e.tx, e.id FROM events e, bound
                 WHERE e.tx < bound.visible_below
                 ORDER BY e.tx DESC, e.id DESC
                 LIMIT 1
             ), start AS (
                 SELECT CASE $1 WHEN 'oldest' THEN h.tx
                                WHEN 'now' THEN coalesce((SELECT tx FROM head), h.tx)
                                ELSE $2 END AS tx,
                        CASE $1 WHEN 'oldest' THEN h.id
                                WHEN 'now' THEN coalesce((SELECT id FROM head), h.id)
                                ELSE $3 END AS id,
                        h.tx AS horizon_tx, h.id AS horizon_id
                 -- One row; saying so keeps the planner's estimate of a never-analysed table
                 -- (a thousand rows) from making the whole read look costly.
                 FROM (SELECT tx, id FROM event_horizon LIMIT 1) AS h
             )
             SELECT start.tx AS start_tx, start.id AS start_id,
                    (start.tx, start.id) < (start.horizon_tx, start.horizon_id) AS start_is_purged,
                    (start.tx, start.id) = (start.horizon_tx, start.horizon_id) OR EXISTS (
                        SELECT 1 FROM events WHERE tx = start.tx AND id = start.id
                    ) AS start_is_known,
                    page.tx, page.id, page.type, page.occurred_at, page.actor, page.data
             FROM start LEFT JOIN LATERAL (
                 SELECT e.tx, e.id, e.type, e.occurred_at, e.actor, e.data::text AS data
                 FROM events e, bound
                 WHERE (e.tx, e.id) > (start.tx, start.id) AND e.tx < bound.visible_below
                   AND (start.tx, start.id) >= (start.horizon_tx, start.horizon_id)
                 ORDER BY e.tx, e.id
                 LIMIT $4
             ) AS page ON true
             ORDER BY page.tx, page.id";

/// The events a reader may be given now, after `start`, at most `limit` of them.
#[tracing::instrument(name = "events.read", skip_all, fields(limit = limit))]
pub async fn read(
    reader: &Reader,
    start: FeedStart,
    limit: usize,
) -> Result<Result<FeedPage, StartRefused>, StoreError> {
    // Below `visible_below`, every transaction has ended: its events are all here, or never
    // will be. One statement, so the check of the cursor, the horizon and the page agree.
    let (mode, after) = match start {
        FeedStart::Oldest => ("oldest", FeedPosition::START),
        FeedStart::Now => ("now", FeedPosition::START),
        FeedStart::After(position) => ("after", position),
    };
    let page_size = limit;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let params: [&(dyn ToSql + Sync); 4] = [&mode, &after.tx, &after.id, &limit];
    let rows = if page_size <= SHARED_PAGE_LIMIT {
        reader.query(READ_PAGE, &params).await?
    } else {
        reader.query_alone(READ_PAGE, &params).await?
    };
    let first = rows.first().expect("the start row is always there");
    if first.get::<_, bool>("start_is_purged") {
        return Ok(Err(StartRefused::Purged));
    }
    if !first.get::<_, bool>("start_is_known") {
        return Ok(Err(StartRefused::NeverIssued));
    }
    let mut next = FeedPosition {
        tx: first.get("start_tx"),
        id: first.get("start_id"),
    };
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(tx) = row.get::<_, Option<i64>>("tx") else {
            break; // The page is empty: the one row is the start's alone.
        };
        let position = FeedPosition {
            tx,
            id: row.get("id"),
        };
        let event = event_from_row(row, position)?;
        next = position;
        events.push(event);
    }
    Ok(Ok(FeedPage { events, next }))
}

/// The question "where does the feed end for readers now?", prepared on one session (the
/// watcher's own): its answer is the newest event readers may be given, or the horizon when
/// there is none.
pub struct HeadQuery(tokio_postgres::Statement);

impl HeadQuery {
    pub async fn prepare(client: &tokio_postgres::Client) -> Result<Self, StoreError> {
        let statement = client
            .prepare(
                "WITH bound AS (
                     SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS visible_below
                 )
                 SELECT coalesce(head.tx, h.tx) AS tx, coalesce(head.id, h.id) AS id
                 FROM (SELECT tx, id FROM event_horizon LIMIT 1) AS h LEFT JOIN LATERAL (
                     SELECT e.tx, e.id FROM events e, bound
                     WHERE e.tx < bound.visible_below
                     ORDER BY e.tx DESC, e.id DESC
                     LIMIT 1
                 ) AS head ON true",
            )
            .await?;
        Ok(Self(statement))
    }

    /// Asks it on `client`, the session it was prepared on.
    pub async fn ask(&self, client: &tokio_postgres::Client) -> Result<FeedPosition, StoreError> {
        let row = client.query_one(&self.0, &[]).await?;
        Ok(FeedPosition {
            tx: row.get("tx"),
            id: row.get("id"),
        })
    }
}

/// How many events one purge deletes at most, so each transaction stays short.
pub const PURGE_BATCH: u64 = 5_000;

/// Deletes up to [`PURGE_BATCH`] of the events older than `retention` that begin the feed,
/// oldest first in feed order, and moves the horizon to the last one deleted, in the same
/// statement. Stops at the first event too young to purge, so everything after the horizon is
/// kept. Returns how many it deleted. Instances may purge at the same time: each batch locks
/// the horizon first, and one that finds it locked leaves the purge to the instance holding it.
#[tracing::instrument(name = "events.purge_expired_batch", skip_all)]
pub async fn purge_expired_batch(
    pool: &Pool,
    retention: std::time::Duration,
) -> Result<u64, StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let lock = transaction
        .prepare_cached("SELECT 1 FROM event_horizon FOR UPDATE SKIP LOCKED")
        .await?;
    if transaction.query_opt(&lock, &[]).await?.is_none() {
        return Ok(0);
    }
    // Only events every reader can see: one of a transaction still running, or held back
    // behind one, may yet be unread, and its transaction id is at least `visible_below`, so
    // it comes after the new horizon.
    let purge = transaction
        .prepare_cached(
            "WITH bound AS (
                 SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS visible_below
             ), candidates AS (
                 SELECT e.tx, e.id, e.occurred_at <= now() - $1 * interval '1 second' AS expired
                 FROM events e, bound
                 WHERE e.tx < bound.visible_below
                 ORDER BY e.tx, e.id
                 LIMIT $2
             ), first_kept AS (
                 SELECT tx, id FROM candidates WHERE NOT expired ORDER BY tx, id LIMIT 1
             ), doomed AS (
                 SELECT c.tx, c.id FROM candidates c
                 WHERE NOT EXISTS (
                     SELECT 1 FROM first_kept k WHERE (c.tx, c.id) >= (k.tx, k.id)
                 )
             ), gone AS (
                 DELETE FROM events e USING doomed d
                 WHERE e.tx = d.tx AND e.id = d.id
                 RETURNING e.tx, e.id
             ), last_gone AS (
                 SELECT tx, id FROM gone ORDER BY tx DESC, id DESC LIMIT 1
             )
             UPDATE event_horizon h SET tx = l.tx, id = l.id
             FROM last_gone l
             RETURNING (SELECT count(*) FROM gone) AS deleted",
        )
        .await?;
    let batch = i64::try_from(PURGE_BATCH).expect("the batch size fits");
    let deleted = transaction
        .query_opt(&purge, &[&retention.as_secs_f64(), &batch])
        .await?
        .map_or(0, |row| row.get::<_, i64>("deleted"));
    transaction.commit().await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}

fn event_from_row(
    row: &tokio_postgres::Row,
    position: FeedPosition,
) -> Result<EventRecord, StoreError> {
    let kind_text: String = row.get("type");
    let kind = EventType::parse(&kind_text).ok_or(StoreError::CorruptEvent(position.id))?;
    let data: String = row.get("data");
    let subject = match kind {
        EventType::OrderCreated | EventType::OrderUpdated | EventType::OrderDeleted => {
            order_from_document(&data).map(EventSubject::Order)
        }
        EventType::ServiceCreated | EventType::ServiceUpdated | EventType::ServiceDeleted => {
            service_from_document(&data).map(EventSubject::Service)
        }
    }
    .ok_or(StoreError::CorruptEvent(position.id))?;
    Ok(EventRecord {
        position,
        kind,
        occurred_at: Timestamp::from_utc(row.get::<_, DateTime<Utc>>("occurred_at"))
            .map_err(|_| StoreError::CorruptEvent(position.id))?,
        actor: row.get("actor"),
        subject,
    })
}
