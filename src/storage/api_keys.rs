//! SQL for API keys. Secrets never reach this module: only their lookup ids and hashes.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::StoreError;
use crate::domain::{ActiveKey, KeyName, KeyRecord, RateLimit, Revoked, Scope, StoredSecret};

/// The unique constraint on key names (revoked keys included).
const NAME_UNIQUE: &str = "api_keys_name_key";

fn scopes_from_row(row: &Row) -> Vec<Scope> {
    row.get::<_, Vec<String>>("scopes")
        .iter()
        // The table's CHECK admits only the scopes there are.
        .filter_map(|scope| scope.parse().ok())
        .collect()
}

fn rate_from_row(row: &Row) -> Option<RateLimit> {
    // The table's CHECKs admit only positive values, both or neither.
    let positive = |column: &str| {
        row.get::<_, Option<i32>>(column)
            .and_then(|value| u32::try_from(value).ok())
            .and_then(std::num::NonZeroU32::new)
    };
    Some(RateLimit::new(
        positive("rate_per_second")?,
        Some(positive("rate_burst")?),
    ))
}

/// A limit as the table's two `integer` columns hold it (both NULL for none).
fn rate_columns(rate: Option<RateLimit>) -> (Option<i32>, Option<i32>) {
    let column = |value: std::num::NonZeroU32| i32::try_from(value.get()).unwrap_or(i32::MAX);
    match rate {
        Some(rate) => (Some(column(rate.per_second)), Some(column(rate.burst))),
        None => (None, None),
    }
}

fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|scope| scope.as_str()).collect()
}

/// Adds a key, with its own rate limit or none. Refused with [`StoreError::KeyNameTaken`]
/// when any key, revoked or not, has the name.
#[tracing::instrument(name = "api_keys.insert", skip_all, fields(key_name = %name))]
pub async fn insert(
    pool: &Pool,
    name: &KeyName,
    scopes: &[Scope],
    rate: Option<RateLimit>,
    secret: StoredSecret<'_>,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO api_keys (name, scopes, lookup_id, secret_hash, rate_per_second, rate_burst)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    let (per_second, burst) = rate_columns(rate);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &name.as_str(),
        &scope_names(scopes),
        &secret.lookup_id,
        &secret.hash.as_slice(),
        &per_second,
        &burst,
    ];
    match client.execute(&statement, &params).await {
        Ok(_) => Ok(()),
        Err(error) if super::violated_constraint(&error) == Some(NAME_UNIQUE) => {
            Err(StoreError::KeyNameTaken)
        }
        Err(error) => Err(error.into()),
    }
}

/// Gives the unrevoked key `name` a new secret (the old one stops working). For the private
/// cluster's `local` key, whose secret file was lost. [`StoreError::NotFound`] when there is
/// no such unrevoked key.
#[tracing::instrument(name = "api_keys.replace_secret", skip_all, fields(key_name = %name))]
pub async fn replace_secret(
    pool: &Pool,
    name: &KeyName,
    secret: StoredSecret<'_>,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "UPDATE api_keys SET lookup_id = $2, secret_hash = $3
             WHERE name = $1 AND revoked_at IS NULL",
        )
        .await?;
    match client
        .execute(
            &statement,
            &[&name.as_str(), &secret.lookup_id, &secret.hash.as_slice()],
        )
        .await?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// Every key, revoked ones included, by name.
#[tracing::instrument(name = "api_keys.list", skip_all)]
pub async fn list(pool: &Pool) -> Result<Vec<KeyRecord>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT name, scopes, rate_per_second, rate_burst, created_at, last_used_at, revoked_at
             FROM api_keys ORDER BY name",
        )
        .await?;
    let rows = client.query(&statement, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| KeyRecord {
            name: row.get("name"),
            scopes: scopes_from_row(row),
            rate: rate_from_row(row),
            created_at: row.get("created_at"),
            last_used_at: row.get("last_used_at"),
            revoked_at: row.get("revoked_at"),
        })
        .collect())
}

/// Revokes the key `name`; [`StoreError::NotFound`] when no key has it.
#[tracing::instrument(name = "api_keys.revoke", skip_all, fields(key_name = %name))]
pub async fn revoke(pool: &Pool, name: &str) -> Result<Revoked, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "WITH target AS (SELECT id, revoked_at FROM api_keys WHERE name = $1 FOR UPDATE),
                  revoked AS (
                      UPDATE api_keys SET revoked_at = now()
                      FROM target
                      WHERE api_keys.id = target.id AND target.revoked_at IS NULL
                      RETURNING api_keys.id
                  )
             SELECT EXISTS (SELECT 1 FROM revoked) AS revoked_now FROM target",
        )
        .await?;
    match client.query_opt(&statement, &[&name]).await? {
        None => Err(StoreError::NotFound),
        Some(row) if row.get("revoked_now") => Ok(Revoked::Now),
        Some(_) => Ok(Revoked::Already),
    }
}

/// The keys that may be used: what the key cache loads.
#[tracing::instrument(name = "api_keys.active", skip_all)]
pub async fn active(pool: &Pool) -> Result<Vec<ActiveKey>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT id, name, scopes, rate_per_second, rate_burst, lookup_id, secret_hash
             FROM api_keys WHERE revoked_at IS NULL",
        )
        .await?;
    let rows = client.query(&statement, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| ActiveKey {
            id: row.get("id"),
            name: row.get("name"),
            scopes: scopes_from_row(row),
            rate: rate_from_row(row),
            lookup_id: row.get("lookup_id"),
            secret_hash: row.get("secret_hash"),
        })
        .collect())
}

/// Records that the keys `ids` were used at the matching `used_at` (never moving a time back).
#[tracing::instrument(name = "api_keys.record_use", skip_all, fields(keys = ids.len()))]
pub async fn record_use(
    pool: &Pool,
    ids: &[i64],
    used_at: &[DateTime<Utc>],
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "UPDATE api_keys SET last_used_at = greatest(last_used_at, used.at)
             FROM unnest($1::bigint[], $2::timestamptz[]) AS used (id, at)
             WHERE api_keys.id = used.id",
        )
        .await?;
    client.execute(&statement, &[&ids, &used_at]).await?;
    Ok(())
}

/// Whether the unrevoked key `name` has the secret with this hash.
#[tracing::instrument(name = "api_keys.has_secret", skip_all, fields(key_name = %name))]
pub async fn has_secret(pool: &Pool, name: &str, hash: &[u8; 32]) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT 1 FROM api_keys WHERE name = $1 AND secret_hash = $2 AND revoked_at IS NULL",
        )
        .await?;
    Ok(client
        .query_opt(&statement, &[&name, &hash.as_slice()])
        .await?
        .is_some())
}

/// Whether a key named `name` exists and is revoked: `None` when no key has the name.
#[tracing::instrument(name = "api_keys.revoked", skip_all, fields(key_name = %name))]
pub async fn revoked(pool: &Pool, name: &str) -> Result<Option<bool>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT revoked_at IS NOT NULL AS revoked FROM api_keys WHERE name = $1")
        .await?;
    let row = client.query_opt(&statement, &[&name]).await?;
    Ok(row.map(|row| row.get("revoked")))
}
