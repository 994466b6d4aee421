//! SQL for orders and the services they book.
//!
//! An order is read with its services in one statement (a join, never a query per row), and
//! created in one statement. A replace is a short transaction of three (see `replace_once`
//! for why). Either way a failed write leaves nothing behind, and writes the
//! database aborts to break a deadlock are retried.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use tokio_postgres::{Row, types::ToSql};

use super::{
    Page, Settled, StoreError, delete_versioned, retry_transient, settle, why_not_written,
};
use crate::domain::{Money, OrderDraft, OrderId, ServiceId, Timestamp};

/// An order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    pub id: OrderId,
    pub scheduled_at: Timestamp,
    pub total_fee: Money,
    pub services: Vec<BookedService>,
    /// Bumped on every change to what the API shows of the order.
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A service as an order shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedService {
    pub id: ServiceId,
    pub name: String,
}

/// Where a page of orders starts: after this (scheduled_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderCursor {
    pub scheduled_at: DateTime<Utc>,
    pub id: OrderId,
}

/// Which orders to list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Scheduled at or after.
    pub from: Option<Timestamp>,
    /// Scheduled strictly before.
    pub to: Option<Timestamp>,
    pub service_id: Option<ServiceId>,
}

/// The columns every order query returns, in this order: the order's own, then one booked
/// service per row (rows of one order are adjacent and in the client's order).
const ORDER_COLUMNS: &str =
    "o.id, o.scheduled_at, o.total_fee, o.version, o.created_at, o.updated_at, s.id, s.name";

/// Folds rows of `ORDER_COLUMNS` (one per booked service, orders adjacent) into orders.
fn fold_orders(rows: &[Row]) -> Vec<OrderRecord> {
    let mut orders: Vec<OrderRecord> = Vec::new();
    for row in rows {
        let id = OrderId::from_db(row.get(0));
        let service = BookedService {
            id: ServiceId::from_db(row.get(6)),
            name: row.get(7),
        };
        match orders.last_mut() {
            Some(order) if order.id == id => order.services.push(service),
            _ => orders.push(order_from_row(row, vec![service])),
        }
    }
    orders
}

/// An order from a row whose first columns are [`ORDER_ROW`]'s.
fn order_from_row(row: &Row, services: Vec<BookedService>) -> OrderRecord {
    OrderRecord {
        id: OrderId::from_db(row.get(0)),
        scheduled_at: stored_timestamp(row.get(1)),
        total_fee: Money::from_decimal(row.get::<_, Decimal>(2))
            .expect("the schema's CHECK keeps fees in range"),
        version: row.get(3),
        created_at: stored_timestamp(row.get(4)),
        updated_at: stored_timestamp(row.get(5)),
        services,
    }
}

fn stored_timestamp(instant: DateTime<Utc>) -> Timestamp {
    // Everything stored came through `Timestamp` or `now()`, both within four-digit years.
    Timestamp::from_utc(instant).expect("stored timestamps are within range")
}

fn single(mut orders: Vec<OrderRecord>) -> Result<OrderRecord, StoreError> {
    orders.pop().ok_or(StoreError::NotFound)
}

pub(super) fn raw_ids(ids: &[ServiceId]) -> Vec<i64> {
    ids.iter().map(|id| id.get()).collect()
}

pub async fn fetch(pool: &Pool, id: OrderId) -> Result<OrderRecord, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS}
             FROM orders o
             JOIN order_services os ON os.order_id = o.id
             JOIN services s ON s.id = os.service_id
             WHERE o.id = $1
             ORDER BY os.position"
        ))
        .await?;
    let rows = client.query(&statement, &[&id.get()]).await?;
    single(fold_orders(&rows))
}

/// The columns of an order row, as the write statements return them.
const ORDER_ROW: &str = "id, scheduled_at, total_fee, version, created_at, updated_at";

/// Creates an order, or reports why it cannot be: its time clashes with another order's, or
/// one of its services does not exist.
pub async fn insert(pool: &Pool, draft: &OrderDraft) -> Result<OrderRecord, StoreError> {
    retry_transient(|| insert_once(pool, draft)).await
}

async fn insert_once(pool: &Pool, draft: &OrderDraft) -> Result<OrderRecord, StoreError> {
    let client = pool.get().await?;
    // One statement: the order, its links and its services' names. `ON CONFLICT ... DO NOTHING`
    // turns a clash with the 3-hour rule into "no row" rather than an error: cheaper, and it
    // leaves no dead tuple behind. Locking the services (`FOR KEY SHARE`, the lock the
    // foreign key check holds anyway) makes the statement read each one's latest committed
    // name: a rename in progress is waited for, not read from the statement's older snapshot.
    // So the new order's version stands for the names it shows.
    let statement = client
        .prepare_cached(&format!(
            "WITH o AS (
                 INSERT INTO orders (scheduled_at, total_fee) VALUES ($1, $2)
                 ON CONFLICT ON CONSTRAINT orders_three_hour_rule DO NOTHING
                 RETURNING {ORDER_ROW}
             ), os AS (
                 INSERT INTO order_services (order_id, service_id, position)
                 SELECT o.id, requested.service_id, requested.position
                 FROM o, unnest($3::bigint[]) WITH ORDINALITY AS requested (service_id, position)
                 RETURNING service_id, position
             )
             SELECT o.*, s.id, s.name
             FROM o, os JOIN services s ON s.id = os.service_id
             ORDER BY os.position
             FOR KEY SHARE OF s"
        ))
        .await?;
    let service_ids = raw_ids(&draft.service_ids);
    let params: [&(dyn ToSql + Sync); 3] = [
        &draft.scheduled_at.as_datetime(),
        &draft.total_fee.as_decimal(),
        &service_ids,
    ];
    match client.query(&statement, &params).await {
        Ok(rows) if rows.is_empty() => Err(StoreError::OrderTimeConflict {
            conflicting_order_id: find_conflict(&client, draft.scheduled_at, None).await?,
        }),
        Ok(rows) => single(fold_orders(&rows)),
        Err(error) => Err(explain_write_error(&client, error, draft, None).await),
    }
}

/// Replaces an order's time, fee and services, if its version is one of `expected_versions`
/// (any version when `None`).
pub async fn replace(
    pool: &Pool,
    id: OrderId,
    draft: &OrderDraft,
    expected_versions: Option<&[i64]>,
) -> Result<OrderRecord, StoreError> {
    retry_transient(|| replace_once(pool, id, draft, expected_versions)).await
}

async fn replace_once(
    pool: &Pool,
    id: OrderId,
    draft: &OrderDraft,
    expected_versions: Option<&[i64]>,
) -> Result<OrderRecord, StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let written = async {
        // Locks are taken in one order everywhere (services by id, then orders) so that a
        // replace and a rename never wait on each other in a cycle: first the services this
        // order will book, as their foreign key checks would later anyway.
        let lock_services = transaction
            .prepare_cached(
                "SELECT 1 FROM services WHERE id = ANY ($1::bigint[]) ORDER BY id FOR KEY SHARE",
            )
            .await?;
        let service_ids = raw_ids(&draft.service_ids);
        transaction.query(&lock_services, &[&service_ids]).await?;
        // Then the order, by updating it: a concurrent replace of the same order waits here,
        // and the next statement's snapshot, taken after the lock, sees the links that replace
        // committed. (In one statement they would be invisible to the link deletion and
        // survive it.)
        let update = transaction
            .prepare_cached(&format!(
                "UPDATE orders
                 SET scheduled_at = $2, total_fee = $3, version = version + 1, updated_at = now()
                 WHERE id = $1 AND ($4::bigint[] IS NULL OR version = ANY ($4))
                 RETURNING {ORDER_ROW}"
            ))
            .await?;
        let params: [&(dyn ToSql + Sync); 4] = [
            &id.get(),
            &draft.scheduled_at.as_datetime(),
            &draft.total_fee.as_decimal(),
            &expected_versions,
        ];
        let Some(row) = transaction.query_opt(&update, &params).await? else {
            return Ok(None);
        };
        // The links to drop and the links to upsert are disjoint sets of rows, which is what
        // lets them share a statement. Names are read as in `insert_once`.
        let relink = transaction
            .prepare_cached(
                "WITH dropped AS (
                     DELETE FROM order_services
                     WHERE order_id = $1 AND service_id <> ALL ($2::bigint[])
                 ), os AS (
                     INSERT INTO order_services (order_id, service_id, position)
                     SELECT $1, requested.service_id, requested.position
                     FROM unnest($2::bigint[]) WITH ORDINALITY AS requested (service_id, position)
                     ON CONFLICT (order_id, service_id) DO UPDATE SET position = excluded.position
                     RETURNING service_id, position
                 )
                 SELECT s.id, s.name
                 FROM os JOIN services s ON s.id = os.service_id
                 ORDER BY os.position
                 FOR KEY SHARE OF s",
            )
            .await?;
        let services = transaction
            .query(&relink, &[&id.get(), &service_ids])
            .await?
            .iter()
            .map(|row| BookedService {
                id: ServiceId::from_db(row.get(0)),
                name: row.get(1),
            })
            .collect();
        Ok(Some(order_from_row(&row, services)))
    }
    .await;
    match settle(transaction, written).await? {
        Settled::Written(order) => Ok(order),
        Settled::NoRow => Err(why_not_written(&client, "orders", id.get()).await?),
        Settled::Failed(error) => Err(explain_write_error(&client, error, draft, Some(id)).await),
    }
}

/// Deletes an order, if its version is one of `expected_versions` (any when `None`). Its
/// slot in the calendar is free again at once.
pub async fn delete(
    pool: &Pool,
    id: OrderId,
    expected_versions: Option<&[i64]>,
) -> Result<(), StoreError> {
    delete_versioned(pool, "orders", id.get(), expected_versions).await
}

/// One page of orders in (scheduled_at, id) order, starting after `after`.
pub async fn list(
    pool: &Pool,
    filter: &OrderFilter,
    after: Option<OrderCursor>,
    limit: usize,
) -> Result<Page<OrderRecord, OrderCursor>, StoreError> {
    let client = pool.get().await?;
    // The page is chosen first on the (scheduled_at, id) index, then joined to its services:
    // one round trip, and no query per order. A NULL parameter switches its filter off.
    let statement = client
        .prepare_cached(&format!(
            "WITH o AS (
                 SELECT id, scheduled_at, total_fee, version, created_at, updated_at
                 FROM orders
                 WHERE ($1::timestamptz IS NULL OR scheduled_at >= $1)
                   AND ($2::timestamptz IS NULL OR scheduled_at < $2)
                   AND ($3::bigint IS NULL OR EXISTS (
                           SELECT 1 FROM order_services f
                           WHERE f.order_id = orders.id AND f.service_id = $3))
                   AND ($4::timestamptz IS NULL OR (scheduled_at, id) > ($4, $5::bigint))
                 ORDER BY scheduled_at, id
                 LIMIT $6
             )
             SELECT {ORDER_COLUMNS}
             FROM o
             JOIN order_services os ON os.order_id = o.id
             JOIN services s ON s.id = os.service_id
             ORDER BY o.scheduled_at, o.id, os.position"
        ))
        .await?;
    let overfetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let rows = client
        .query(
            &statement,
            &[
                &filter.from.map(|t| t.as_datetime()),
                &filter.to.map(|t| t.as_datetime()),
                &filter.service_id.map(ServiceId::get),
                &after.map(|cursor| cursor.scheduled_at),
                &after.map(|cursor| cursor.id.get()),
                &overfetch,
            ],
        )
        .await?;
    let orders = fold_orders(&rows);
    Ok(Page::from_overfetched(orders, limit, |order| OrderCursor {
        scheduled_at: order.scheduled_at.as_datetime(),
        id: order.id,
    }))
}

/// Turns a failed write into its meaning, looking up what the error does not say.
async fn explain_write_error(
    client: &impl GenericClient,
    error: tokio_postgres::Error,
    draft: &OrderDraft,
    updating: Option<OrderId>,
) -> StoreError {
    let explained = match StoreError::from_db(error) {
        StoreError::OrderTimeConflict { .. } => find_conflict(client, draft.scheduled_at, updating)
            .await
            .map(|conflicting_order_id| StoreError::OrderTimeConflict {
                conflicting_order_id,
            }),
        // On insert, this foreign key fails because a service does not exist.
        StoreError::ServiceInUse => super::services::find_missing_with(client, &draft.service_ids)
            .await
            .map(StoreError::UnknownServices),
        other => Ok(other),
    };
    explained.unwrap_or_else(|lookup_error| lookup_error)
}

/// The order, other than `except`, whose 3-hour window overlaps the one at `scheduled_at`.
/// Runs after the failed write, so the answer can be "none any more".
async fn find_conflict(
    client: &impl GenericClient,
    scheduled_at: Timestamp,
    except: Option<OrderId>,
) -> Result<Option<OrderId>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT id FROM orders
             WHERE order_booking_window(scheduled_at) && order_booking_window($1)
               AND id IS DISTINCT FROM $2
             ORDER BY abs(extract(epoch FROM scheduled_at - $1)), id
             LIMIT 1",
        )
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[&scheduled_at.as_datetime(), &except.map(OrderId::get)],
        )
        .await?;
    Ok(row.map(|row| OrderId::from_db(row.get(0))))
}
