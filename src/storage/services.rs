//! SQL for services.
//!
//! A rename writes the service's row alone: the orders that book it show its new name because
//! they read it when they are read, and their revisions (see `super::orders`) include the
//! service's version.

use std::sync::LazyLock;

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::{Row, types::ToSql};

use super::{
    Reader, SHARED_PAGE_LIMIT, StoreError, holding_record_lock,
    shared_sql::{SERVICE_DOCUMENT, SERVICE_EXISTS, raw_ids},
    violated_constraint, why_not_written,
};
use crate::domain::{EventType, Page, ServiceId, ServiceName, ServiceRecord, Timestamp};

const SERVICE_COLUMNS: &str = "id, name, version, created_at, updated_at, created_by, updated_by";

/// The unique index that keeps names distinct, ignoring case.
const NAME_UNIQUE: &str = "services_name_unique_ci";

/// The key space of the advisory locks that serialise the writes of one service (see
/// [`holding_record_lock`]).
const SERVICE_LOCK_SPACE: i32 = 0x7376_6373; // "svcs"

fn from_row(row: &Row) -> ServiceRecord {
    let stored =
        |column| Timestamp::from_utc(row.get(column)).expect("stored timestamps are within range");
    ServiceRecord {
        id: ServiceId::from_db(row.get("id")),
        name: row.get("name"),
        version: row.get("version"),
        created_at: stored("created_at"),
        updated_at: stored("updated_at"),
        created_by: row.get("created_by"),
        updated_by: row.get("updated_by"),
    }
}

/// [`fetch`]'s statement.
static FETCH: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1"));

#[tracing::instrument(name = "services.fetch", skip_all, fields(service_id = %id))]
pub async fn fetch(reader: &Reader, id: ServiceId) -> Result<ServiceRecord, StoreError> {
    let rows = reader.query(FETCH.as_str(), &[&id.get()]).await?;
    rows.first().map(from_row).ok_or(StoreError::NotFound)
}

/// Creates a service on behalf of the key `actor`, in a transaction or not: a taken name
/// fails nothing, so a transaction goes on after it.
#[tracing::instrument(name = "services.insert", skip_all)]
pub async fn insert(
    client: &impl GenericClient,
    name: &ServiceName,
    actor: &str,
) -> Result<ServiceRecord, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "WITH s AS (
                 INSERT INTO services (name, created_by, updated_by) VALUES ($1, $2, $2)
                 ON CONFLICT (name COLLATE case_insensitive) DO NOTHING
                 RETURNING {SERVICE_COLUMNS}
             ), event AS (
                 INSERT INTO events (type, actor, subject_id, data)
                 SELECT '{created}', $2, s.id, {SERVICE_DOCUMENT} FROM s
             )
             SELECT {SERVICE_COLUMNS} FROM s",
            created = EventType::ServiceCreated.as_str(),
        ))
        .await?;
    let row = client
        .query_opt(&statement, &[&name.as_str(), &actor])
        .await?;
    row.as_ref()
        .map(from_row)
        .ok_or(StoreError::ServiceNameTaken)
}

/// Renames a service on behalf of the key `actor`, if its version is one of
/// `expected_versions` (any when `None`).
#[tracing::instrument(name = "services.rename", skip_all, fields(service_id = %id))]
pub async fn rename(
    pool: &Pool,
    id: ServiceId,
    name: &ServiceName,
    expected_versions: Option<&[i64]>,
    actor: &str,
) -> Result<ServiceRecord, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "WITH s AS (
                 UPDATE services
                 SET name = $2, version = version + 1, updated_at = now(), updated_by = $4
                 WHERE id = $1 AND ($3::bigint[] IS NULL OR version = ANY ($3)) AND {locked}
                 RETURNING {SERVICE_COLUMNS}
             ), event AS (
                 INSERT INTO events (type, actor, subject_id, data)
                 SELECT '{updated}', $4, s.id, {SERVICE_DOCUMENT} FROM s
             )
             SELECT {SERVICE_COLUMNS} FROM s",
            locked = holding_record_lock(SERVICE_LOCK_SPACE),
            updated = EventType::ServiceUpdated.as_str(),
        ))
        .await?;
    match client
        .query_opt(
            &statement,
            &[&id.get(), &name.as_str(), &expected_versions, &actor],
        )
        .await
    {
        Ok(Some(row)) => Ok(from_row(&row)),
        Ok(None) => Err(why_not_written(&client, "services", id.get()).await?),
        Err(error) if violated_constraint(&error) == Some(NAME_UNIQUE) => {
            Err(StoreError::ServiceNameTaken)
        }
        Err(error) => Err(error.into()),
    }
}

/// Deletes a service, if its version is one of `expected_versions` (any when `None`) and no
/// order books it.
#[tracing::instrument(name = "services.delete", skip_all, fields(service_id = %id))]
pub async fn delete(
    pool: &Pool,
    id: ServiceId,
    expected_versions: Option<&[i64]>,
    actor: &str,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "WITH s AS (
                 DELETE FROM services
                 WHERE id = $1 AND ($2::bigint[] IS NULL OR version = ANY ($2)) AND {locked}
                 RETURNING {SERVICE_COLUMNS}
             ), event AS (
                 INSERT INTO events (type, actor, subject_id, data)
                 SELECT '{deleted}', $3, s.id, {SERVICE_DOCUMENT} FROM s
             )
             SELECT 1 FROM s",
            locked = holding_record_lock(SERVICE_LOCK_SPACE),
            deleted = EventType::ServiceDeleted.as_str(),
        ))
        .await?;
    match client
        .query(&statement, &[&id.get(), &expected_versions, &actor])
        .await
    {
        Ok(rows) if rows.is_empty() => Err(why_not_written(&client, "services", id.get()).await?),
        Ok(_) => Ok(()),
        // On a delete, the links' foreign key fails because an order still books the service.
        Err(error) if violated_constraint(&error) == Some(SERVICE_EXISTS) => {
            Err(StoreError::ServiceInUse)
        }
        Err(error) => Err(error.into()),
    }
}

/// [`list`]'s statement.
static LIST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SERVICE_COLUMNS} FROM services
         WHERE ($1::bigint IS NULL OR id > $1)
         ORDER BY id
         LIMIT $2"
    )
});

/// One page of services in id order, starting after `after`.
#[tracing::instrument(name = "services.list", skip_all, fields(limit = limit, after = ?after.map(ServiceId::get)))]
pub async fn list(
    reader: &Reader,
    after: Option<ServiceId>,
    limit: usize,
) -> Result<Page<ServiceRecord, ServiceId>, StoreError> {
    let overfetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let params: [&(dyn ToSql + Sync); 2] = [&after.map(ServiceId::get), &overfetch];
    let rows = if limit <= SHARED_PAGE_LIMIT {
        reader.query(LIST.as_str(), &params).await?
    } else {
        reader.query_alone(LIST.as_str(), &params).await?
    };
    let services = rows.iter().map(from_row).collect();
    Ok(Page::from_overfetched(
        services,
        limit,
        |service: &ServiceRecord| service.id,
    ))
}

/// Which of `ids` name no service, in the order given.
#[tracing::instrument(name = "services.find_missing", skip_all, fields(count = ids.len()))]
pub async fn find_missing(
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
    let rows = client.query(&statement, &[&raw_ids(ids)]).await?;
    Ok(rows
        .iter()
        .map(|row| ServiceId::from_db(row.get("id")))
        .collect())
}
