//! SQL for idempotency records: the first answer to each create sent with an
//! `Idempotency-Key`, kept per API key, and written in the create's own transaction.
//!
//! A request claims its key with a transaction-scoped advisory lock before it looks for a
//! record, so that of two requests with one key, one works while the other is told at once
//! that the key is in use; the lock ends with the transaction, after its record (if any) is
//! committed and visible. That needs READ COMMITTED (PostgreSQL's default, which nothing here
//! changes): the lookup is a statement of its own, whose snapshot is taken after the lock is
//! granted. The primary key backs this up: [`record`] replaces only an expired record, and
//! fails rather than overwrite a live one.
//!
//! The usual idempotent create, an order that is created, does not take this path: it is one
//! statement that claims, creates and keeps (see [`super::orders::insert_kept`]), and only what
//! that statement cannot decide comes here.

use std::{sync::LazyLock, time::Duration};

use deadpool_postgres::{Pool, Transaction};

use super::{
    StoreError,
    shared_sql::{key_lock, order_from_document},
};
use crate::domain::{OrderRecord, StoredAnswer};

/// A first answer as it is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum KeptAnswer {
    /// As it was rendered, byte for byte.
    Rendered(StoredAnswer),
    /// The order a create made, kept by the statement that made it (see
    /// [`super::orders::insert_kept`]): the answer is the one its create renders for it.
    CreatedOrder(OrderRecord),
}

/// What a request finds when it claims its key.
#[derive(Debug)]
pub enum Claim {
    /// No answer is kept for the key: this request is the first, and holds the key until its
    /// transaction ends.
    First,
    /// The key answered this same request before.
    Replay(KeptAnswer),
    /// The key answered another request before.
    OtherRequest,
    /// Another request with the key is being processed now.
    InUse,
}

/// [`claim`]'s first statement.
static CLAIM_LOCK: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} AS locked", key_lock("$1", "$2")));

/// Claims `key` of the API key `api_key_id` for the request with `fingerprint`, in the
/// transaction `transaction` (see the module docs). A record older than `retention` counts as
/// none: the purge may not have reached it yet.
#[tracing::instrument(name = "idempotency.claim", skip_all, fields(api_key_id = api_key_id))]
pub async fn claim(
    transaction: &Transaction<'_>,
    api_key_id: i64,
    key: &str,
    fingerprint: &[u8; 32],
    retention: Duration,
) -> Result<Claim, StoreError> {
    let lock = transaction.prepare_cached(CLAIM_LOCK.as_str()).await?;
    // A statement of its own, so that its snapshot is taken after the lock was granted and
    // sees the record of any request that held the key before.
    let lookup = transaction
        .prepare_cached(
            "SELECT fingerprint, status, content_type, body, location, etag,
                    order_document::text AS order_document
             FROM idempotency_records
             WHERE api_key_id = $1 AND idempotency_key = $2
               AND created_at > now() - $3 * interval '1 second'",
        )
        .await?;
    // Sent together, in this order (one round trip): the look-up runs after the lock is taken,
    // and when it was not, its answer is not used.
    let retention = retention.as_secs_f64();
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&api_key_id, &key];
    let lookup_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&api_key_id, &key, &retention];
    let (locked, found) = tokio::join!(
        biased;
        transaction.query_one(&lock, &lock_params),
        transaction.query_opt(&lookup, &lookup_params),
    );
    if !locked?.get::<_, bool>("locked") {
        return Ok(Claim::InUse);
    }
    let Some(row) = found? else {
        return Ok(Claim::First);
    };
    if row.get::<_, &[u8]>("fingerprint") != fingerprint.as_slice() {
        return Ok(Claim::OtherRequest);
    }
    Ok(Claim::Replay(kept_answer(&row)?))
}

/// The answer a record row keeps (the table's check constraint allows one form or the other).
fn kept_answer(row: &tokio_postgres::Row) -> Result<KeptAnswer, StoreError> {
    if let Some(document) = row.get::<_, Option<&str>>("order_document") {
        return order_from_document(document)
            .map(KeptAnswer::CreatedOrder)
            .ok_or(StoreError::CorruptAnswer);
    }
    let (Some(content_type), Some(body)) = (row.get("content_type"), row.get("body")) else {
        return Err(StoreError::CorruptAnswer);
    };
    Ok(KeptAnswer::Rendered(StoredAnswer {
        status: u16::try_from(row.get::<_, i16>("status")).unwrap_or(500),
        content_type,
        body,
        location: row.get("location"),
        etag: row.get("etag"),
    }))
}

/// Keeps `answer` as the one to the request that [`claim`]ed `key` first, in its transaction.
/// Replaces an expired record (older than `retention`) the purge has not reached yet; finding
/// a live one is a fault ([`StoreError::NotFound`] stands for "not written"), since the claim
/// saw none.
#[tracing::instrument(name = "idempotency.record", skip_all, fields(api_key_id = api_key_id))]
pub async fn record(
    transaction: &Transaction<'_>,
    api_key_id: i64,
    key: &str,
    fingerprint: &[u8; 32],
    answer: &StoredAnswer,
    retention: Duration,
) -> Result<(), StoreError> {
    let statement = transaction
        .prepare_cached(
            "INSERT INTO idempotency_records
                 (api_key_id, idempotency_key, fingerprint, status, content_type, body, location, etag)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (api_key_id, idempotency_key) DO UPDATE
             SET fingerprint = excluded.fingerprint, status = excluded.status,
                 content_type = excluded.content_type, body = excluded.body,
                 location = excluded.location, etag = excluded.etag,
                 order_document = NULL, created_at = now()
             WHERE idempotency_records.created_at <= now() - $9 * interval '1 second'",
        )
        .await?;
    let status = i16::try_from(answer.status).unwrap_or(i16::MAX);
    let retention = retention.as_secs_f64();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &api_key_id,
        &key,
        &fingerprint.as_slice(),
        &status,
        &answer.content_type,
        &answer.body,
        &answer.location,
        &answer.etag,
        &retention,
    ];
    match transaction.execute(&statement, &params).await? {
        1 => Ok(()),
        _ => Err(StoreError::NotFound),
    }
}

/// How many expired records one purge statement deletes: small batches keep each statement
/// short, however many expired at once.
pub const PURGE_BATCH: u64 = 5_000;

/// Deletes up to [`PURGE_BATCH`] of the records older than `retention`. Returns how many it
/// deleted.
#[tracing::instrument(name = "idempotency.purge_expired_batch", skip_all)]
pub async fn purge_expired_batch(pool: &Pool, retention: Duration) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "DELETE FROM idempotency_records
             WHERE ctid IN (
                 SELECT ctid FROM idempotency_records
                 WHERE created_at <= now() - $1 * interval '1 second'
                 LIMIT $2
                 -- Instances purge at the same time; each takes rows the others have not.
                 FOR UPDATE SKIP LOCKED
             )",
        )
        .await?;
    let batch = i64::try_from(PURGE_BATCH).expect("the batch size fits");
    Ok(client
        .execute(&statement, &[&retention.as_secs_f64(), &batch])
        .await?)
}
