//! SQL for services.

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use super::{
    Page, Settled, StoreError, delete_versioned, retry_transient, settle, why_not_written,
};
use crate::domain::{ServiceId, ServiceName, Timestamp};

/// A service as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub id: ServiceId,
    pub name: String,
    /// Bumped on every change.
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const SERVICE_COLUMNS: &str = "id, name, version, created_at, updated_at";

fn from_row(row: &Row) -> ServiceRecord {
    let stored =
        |index| Timestamp::from_utc(row.get(index)).expect("stored timestamps are within range");
    ServiceRecord {
        id: ServiceId::from_db(row.get(0)),
        name: row.get(1),
        version: row.get(2),
        created_at: stored(3),
        updated_at: stored(4),
    }
}

pub async fn fetch(pool: &Pool, id: ServiceId) -> Result<ServiceRecord, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1"
        ))
        .await?;
    let row = client.query_opt(&statement, &[&id.get()]).await?;
    row.as_ref().map(from_row).ok_or(StoreError::NotFound)
}

pub async fn insert(pool: &Pool, name: &ServiceName) -> Result<ServiceRecord, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO services (name) VALUES ($1)
             ON CONFLICT (name COLLATE case_insensitive) DO NOTHING
             RETURNING {SERVICE_COLUMNS}"
        ))
        .await?;
    let row = client.query_opt(&statement, &[&name.as_str()]).await?;
    row.as_ref()
        .map(from_row)
        .ok_or(StoreError::ServiceNameTaken)
}

/// Renames a service, if its version is one of `expected_versions` (any when `None`). Orders
/// that book it show its name, so their versions (and so their ETags) move on too.
pub async fn rename(
    pool: &Pool,
    id: ServiceId,
    name: &ServiceName,
    expected_versions: Option<&[i64]>,
) -> Result<ServiceRecord, StoreError> {
    retry_transient(|| rename_once(pool, id, name, expected_versions)).await
}

async fn rename_once(
    pool: &Pool,
    id: ServiceId,
    name: &ServiceName,
    expected_versions: Option<&[i64]>,
) -> Result<ServiceRecord, StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let written: Result<_, tokio_postgres::Error> = async {
        // FOR UPDATE, not the weaker lock an UPDATE of the name takes: it waits for orders
        // that are booking this service right now (their foreign key checks hold KEY SHARE
        // locks) and makes new bookings wait for this rename. So the orders bumped below are
        // exactly the ones that show the old name.
        let lock = transaction
            .prepare_cached("SELECT 1 FROM services WHERE id = $1 FOR UPDATE")
            .await?;
        transaction.query_opt(&lock, &[&id.get()]).await?;
        let rename = transaction
            .prepare_cached(&format!(
                "UPDATE services
                 SET name = $2, version = version + 1, updated_at = now()
                 WHERE id = $1 AND ($3::bigint[] IS NULL OR version = ANY ($3))
                 RETURNING {SERVICE_COLUMNS}"
            ))
            .await?;
        let Some(row) = transaction
            .query_opt(&rename, &[&id.get(), &name.as_str(), &expected_versions])
            .await?
        else {
            return Ok(None);
        };
        // Orders are locked in id order, as everywhere, so two renames bumping the same orders
        // cannot deadlock.
        let bump_orders = transaction
            .prepare_cached(
                "UPDATE orders SET version = version + 1
                 WHERE id IN (
                     SELECT o.id FROM orders o JOIN order_services os ON os.order_id = o.id
                     WHERE os.service_id = $1
                     ORDER BY o.id
                     FOR NO KEY UPDATE OF o)",
            )
            .await?;
        transaction.execute(&bump_orders, &[&id.get()]).await?;
        Ok(Some(from_row(&row)))
    }
    .await;
    match settle(transaction, written).await? {
        Settled::Written(service) => Ok(service),
        Settled::NoRow => Err(why_not_written(&client, "services", id.get()).await?),
        Settled::Failed(error) => Err(StoreError::from_db(error)),
    }
}

/// Deletes a service, if its version is one of `expected_versions` (any when `None`) and no
/// order books it.
pub async fn delete(
    pool: &Pool,
    id: ServiceId,
    expected_versions: Option<&[i64]>,
) -> Result<(), StoreError> {
    delete_versioned(pool, "services", id.get(), expected_versions).await
}

/// One page of services in id order, starting after `after`.
pub async fn list(
    pool: &Pool,
    after: Option<ServiceId>,
    limit: usize,
) -> Result<Page<ServiceRecord, ServiceId>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services
             WHERE ($1::bigint IS NULL OR id > $1)
             ORDER BY id
             LIMIT $2"
        ))
        .await?;
    let overfetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let rows = client
        .query(&statement, &[&after.map(ServiceId::get), &overfetch])
        .await?;
    let services = rows.iter().map(from_row).collect();
    Ok(Page::from_overfetched(
        services,
        limit,
        |service: &ServiceRecord| service.id,
    ))
}

/// Which of `ids` name no service, in the order given.
pub async fn find_missing(pool: &Pool, ids: &[ServiceId]) -> Result<Vec<ServiceId>, StoreError> {
    let client = pool.get().await?;
    find_missing_with(&client, ids).await
}

pub(super) async fn find_missing_with(
    client: &impl GenericClient,
    ids: &[ServiceId],
) -> Result<Vec<ServiceId>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT requested.id
             FROM unnest($1::bigint[]) WITH ORDINALITY AS requested (id, position)
             WHERE NOT EXISTS (SELECT 1 FROM services WHERE services.id = requested.id)
             ORDER BY requested.position",
        )
        .await?;
    let rows = client
        .query(&statement, &[&super::orders::raw_ids(ids)])
        .await?;
    Ok(rows
        .iter()
        .map(|row| ServiceId::from_db(row.get(0)))
        .collect())
}
