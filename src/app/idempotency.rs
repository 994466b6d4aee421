//! Idempotent creates: a create sent again with the same `Idempotency-Key` gets its first
//! answer again instead of being carried out twice.
//!
//! What is remembered is decided here: the outcomes the write itself decided (the record was
//! created, or refused by the 3-hour rule, a taken name or a missing service), which the same
//! request would meet again. Requests refused before the write and failures of the server are
//! not, so they can be retried with the same key. How an answer is rendered is the HTTP
//! layer's; it is stored as rendered, in the create's own transaction, so no create can be
//! committed without its answer or the other way round. The usual order create keeps its
//! answer as the order itself, in the statement that creates it (see
//! [`crate::storage::orders::insert_kept`]); a replay renders it as the first answer was.

use sha2::{Digest, Sha256};

use super::{AppError, AppState, authentication::Caller};
use crate::{
    domain::{IdempotencyKey, OrderRecord, StoredAnswer},
    storage::{
        self, StoreError,
        idempotency::{self as records, Claim, KeptAnswer},
    },
};

/// What identifies a request for its key: the operation and the request as parsed, in a
/// canonical form, so the same request matches however its JSON was spaced or ordered.
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `operation` with the request whose canonical fields are `parts`.
    pub fn of(operation: &str, parts: &[&str]) -> Self {
        let mut hash = Sha256::new();
        for part in std::iter::once(operation).chain(parts.iter().copied()) {
            // Length-prefixed, so that no two lists of parts run together alike.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        Self(hash.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A create's answer: carried out now, or the first answer to the same request replayed.
pub enum Answer<T> {
    Fresh(T),
    Replayed(StoredAnswer),
}

/// Whether an outcome is one the write decided, and so is kept for replay. (The HTTP layer
/// renders exactly these; a test keeps the two lists equal.)
pub fn decided_by_the_write<T>(outcome: &Result<T, AppError>) -> bool {
    matches!(
        outcome,
        Ok(_)
            | Err(AppError::OrderTimeConflict { .. }
                | AppError::ServiceNameTaken
                | AppError::UnknownServices(_))
    )
}

/// A create that can run inside the transaction that keeps its answer.
pub trait TransactionalCreate: Sync {
    type Record: Send;

    /// Carries out the create in `transaction`, which goes on after it (a refusal must leave
    /// the transaction usable, as a savepoint does).
    fn write<'t>(
        &'t self,
        transaction: &'t deadpool_postgres::Transaction<'_>,
    ) -> impl Future<Output = Result<Self::Record, AppError>> + Send + 't;

    /// The record of an order kept as its create's answer (see [`KeptAnswer::CreatedOrder`]),
    /// for the creates whose records are orders. A key's record is only ever replayed to the
    /// operation that made it (the fingerprint names the operation), so others never meet one.
    fn kept_order(_order: OrderRecord) -> Option<Self::Record> {
        None
    }
}

/// Runs `create` once for `caller`'s `key`: in a transaction that first claims the key, and
/// that keeps `render`'s rendering of the outcome when the write decided it. A write that
/// failed transiently (see [`StoreError::is_transient`]) is tried again, whole.
pub async fn create_once<C: TransactionalCreate>(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    create: &C,
    render: impl Fn(&Result<C::Record, AppError>) -> StoredAnswer + Sync,
) -> Result<Answer<C::Record>, AppError> {
    storage::retry_while(
        || attempt(state, caller, key, fingerprint, create, &render),
        AppError::is_transient,
    )
    .await
}

async fn attempt<C: TransactionalCreate>(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    create: &C,
    render: &(impl Fn(&Result<C::Record, AppError>) -> StoredAnswer + Sync),
) -> Result<Answer<C::Record>, AppError> {
    let mut client = state.pool.get().await.map_err(StoreError::from)?;
    let transaction = client.transaction().await.map_err(StoreError::from)?;
    let claim = records::claim(
        &transaction,
        caller.key_id,
        key.as_str(),
        &fingerprint.0,
        state.idempotency_retention,
    )
    .await?;
    // Every way out but a commit ends the transaction with a rollback that is waited for: it
    // releases the key's lock, and a transaction merely dropped would release it only when its
    // connection gets round to it, after this request has answered. A request with the same
    // key sent at once after the answer would find the key still in use.
    let refusal = match claim {
        Claim::First => None,
        Claim::Replay(KeptAnswer::Rendered(answer)) => {
            metrics::counter!(crate::telemetry::metrics::IDEMPOTENT_REPLAYS).increment(1);
            Some(Ok(Answer::Replayed(answer)))
        }
        // Rendered as the first answer rendered it, from the same record: the same bytes.
        Claim::Replay(KeptAnswer::CreatedOrder(order)) => match C::kept_order(order) {
            Some(record) => {
                metrics::counter!(crate::telemetry::metrics::IDEMPOTENT_REPLAYS).increment(1);
                Some(Ok(Answer::Replayed(render(&Ok(record)))))
            }
            None => Some(Err(AppError::Internal(
                "a kept order answers a request that does not create one".into(),
            ))),
        },
        Claim::OtherRequest => Some(Err(AppError::IdempotencyKeyReused)),
        Claim::InUse => Some(Err(AppError::IdempotencyKeyInUse)),
    };
    if let Some(refusal) = refusal {
        transaction.rollback().await.map_err(StoreError::from)?;
        return refusal;
    }
    let outcome = create.write(&transaction).await;
    // A transient failure is not an answer: the caller tries again, or gives up with a 5xx or
    // with a 409 that names no order, neither of which a replay should repeat.
    let transient = outcome.as_ref().is_err_and(AppError::is_transient);
    if transient || !decided_by_the_write(&outcome) {
        transaction.rollback().await.map_err(StoreError::from)?;
        return outcome.map(Answer::Fresh);
    }
    let answer = render(&outcome);
    records::record(
        &transaction,
        caller.key_id,
        key.as_str(),
        &fingerprint.0,
        &answer,
        state.idempotency_retention,
    )
    .await
    .map_err(|error| match error {
        StoreError::NotFound => AppError::Internal(
            "a live idempotency record appeared for a key this request held".into(),
        ),
        other => other.into(),
    })?;
    transaction.commit().await.map_err(StoreError::from)?;
    outcome.map(Answer::Fresh)
}

/// Deletes the answers older than the retention, every so often, until the returned task is
/// aborted.
pub fn spawn_purger(state: &AppState) -> tokio::task::JoinHandle<()> {
    super::spawn_purger(
        state,
        state.idempotency_retention,
        records::PURGE_BATCH,
        "expired idempotency records",
        |pool, retention| async move { records::purge_expired_batch(&pool, retention).await },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_requests_apart_and_parts_cannot_run_together() {
        let fingerprint = |operation, parts: &[&str]| Fingerprint::of(operation, parts).0;
        assert_eq!(fingerprint("a", &["x", "y"]), fingerprint("a", &["x", "y"]));
        assert_ne!(fingerprint("a", &["x", "y"]), fingerprint("a", &["xy"]));
        assert_ne!(fingerprint("a", &["x", "y"]), fingerprint("a", &["x", "z"]));
        assert_ne!(fingerprint("a", &["x"]), fingerprint("b", &["x"]));
    }
}
