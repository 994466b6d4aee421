//! SQL for orders and the services they book.
//!
//! An order is read with its services in one statement (a join, never a query per row), and
//! created in one statement. A replace is a short transaction (see `replace_once` for why).
//! Either way a failed write leaves nothing behind, and writes the database aborts to break a
//! deadlock are retried.
//!
//! An order's revision (what its ETag stands for) is its own version together with the sum
//! of the versions of the services it books, read in the same statement as their names. A
//! rename bumps only the service's version, so it writes one row however many orders book
//! the service, and still changes the revision of each of them.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use tokio_postgres::{Row, Statement, types::ToSql};

use super::{
    Reader, SHARED_PAGE_LIMIT, Settled, StoreError, holding_record_lock, retry_transient, settle,
    shared_sql::{SERVICE_EXISTS, STORED_LINKS, key_lock, order_document, raw_ids},
    violated_constraint, why_not_written,
};
use crate::domain::{
    BookedService, EventType, Money, OrderCursor, OrderDraft, OrderId, OrderRecord, OrderRevision,
    ServiceId, Timestamp,
};

/// The exclusion constraint that is the 3-hour rule.
const THREE_HOUR_RULE: &str = "orders_three_hour_rule";

/// Which orders to list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Scheduled at or after.
    pub from: Option<Timestamp>,
    /// Scheduled strictly before.
    pub to: Option<Timestamp>,
    pub service_id: Option<ServiceId>,
}

/// The columns of an order row, as the write statements return them.
const ORDER_ROW: &str =
    "id, scheduled_at, total_fee, version, created_at, updated_at, created_by, updated_by";

/// The columns every order read returns: the order's own, then one booked service per row
/// (rows of one order are adjacent and in the client's order).
const ORDER_COLUMNS: &str = "o.id, o.scheduled_at, o.total_fee, o.version, o.created_at, \
     o.updated_at, o.created_by, o.updated_by, s.id AS service_id, s.name AS service_name, s.version AS service_version";

/// Folds rows of `ORDER_COLUMNS` (one per booked service, orders adjacent, each order's in
/// their order) into orders.
fn fold_orders(rows: &[Row]) -> Vec<OrderRecord> {
    let mut orders = Vec::new();
    let mut page = PageOfOrders::new(usize::MAX, Positions::InOrder, |order| orders.push(order));
    for row in rows {
        let _ = page.take(row);
    }
    page.finish();
    orders
}

fn booked_service(row: &Row) -> BookedService {
    BookedService {
        id: ServiceId::from_db(row.get("service_id")),
        name: row.get("service_name"),
        version: row.get("service_version"),
    }
}

/// An order from a row whose columns include [`ORDER_ROW`]'s, booking `services`.
fn order_from_row(row: &Row, services: Vec<BookedService>) -> OrderRecord {
    let mut order = OrderRecord {
        id: OrderId::from_db(row.get("id")),
        scheduled_at: stored_timestamp(row.get("scheduled_at")),
        total_fee: Money::from_decimal(row.get::<_, Decimal>("total_fee"))
            .expect("the schema's CHECK keeps fees in range"),
        revision: OrderRevision {
            order: row.get("version"),
            services: 0,
        },
        created_at: stored_timestamp(row.get("created_at")),
        updated_at: stored_timestamp(row.get("updated_at")),
        created_by: row.get("created_by"),
        updated_by: row.get("updated_by"),
        services: Vec::with_capacity(services.len()),
    };
    services.into_iter().for_each(|service| order.book(service));
    order
}

fn stored_timestamp(instant: DateTime<Utc>) -> Timestamp {
    // Everything stored came through `Timestamp` or `now()`, both within four-digit years.
    Timestamp::from_utc(instant).expect("stored timestamps are within range")
}

fn single(mut orders: Vec<OrderRecord>) -> Result<OrderRecord, StoreError> {
    orders.pop().ok_or(StoreError::NotFound)
}

/// The expected revisions as two parallel arrays, the form the statements take them in;
/// `None` (any revision) stays `None`.
fn revision_arrays(expected: Option<&[OrderRevision]>) -> (Option<Vec<i64>>, Option<Vec<i64>>) {
    match expected {
        None => (None, None),
        Some(revisions) => (
            Some(revisions.iter().map(|revision| revision.order).collect()),
            Some(revisions.iter().map(|revision| revision.services).collect()),
        ),
    }
}

/// The condition "this order (as `orders`) is at one of the revisions in `$n` and `$n+1`, or
/// those are NULL", computed as [`fold_orders`] computes it.
fn at_revision(orders_param: usize) -> String {
    let services_param = orders_param + 1;
    format!(
        "(${orders_param}::bigint[] IS NULL OR (orders.version, (
             SELECT coalesce(sum(s.version), 0)::bigint
             FROM order_services os JOIN services s ON s.id = os.service_id
             WHERE os.order_id = orders.id
         )) IN (SELECT * FROM unnest(${orders_param}::bigint[], ${services_param}::bigint[])))"
    )
}

/// [`fetch`]'s statement: the order and its services, one row per service.
static FETCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ORDER_COLUMNS}
         FROM orders o
         JOIN order_services os ON os.order_id = o.id
         JOIN services s ON s.id = os.service_id
         WHERE o.id = $1
         ORDER BY os.position"
    )
});

#[tracing::instrument(name = "orders.fetch", skip_all, fields(order_id = %id))]
pub async fn fetch(reader: &Reader, id: OrderId) -> Result<OrderRecord, StoreError> {
    let rows = reader.query(FETCH.as_str(), &[&id.get()]).await?;
    single(fold_orders(&rows))
}

/// Whether the order exists at one of `expected` revisions (any when `None`): Ok, or why not
/// ([`StoreError::NotFound`] or [`StoreError::VersionMismatch`]). For reporting why a write
/// cannot succeed; a write checks its precondition in its own statement.
#[tracing::instrument(name = "orders.check_revision", skip_all, fields(order_id = %id))]
pub async fn check_revision(
    client: &impl GenericClient,
    id: OrderId,
    expected: Option<&[OrderRevision]>,
) -> Result<(), StoreError> {
    run_at_revision(client, "SELECT 1 FROM orders", id, expected).await
}

/// Runs `statement` (a SELECT or DELETE of `orders`, without its WHERE) on the order if it is
/// at one of `expected` revisions (any when `None`); else says whether it was missing or at
/// another revision.
async fn run_at_revision(
    client: &impl GenericClient,
    statement: &str,
    id: OrderId,
    expected: Option<&[OrderRevision]>,
) -> Result<(), StoreError> {
    let statement = client
        .prepare_cached(&format!("{statement} WHERE id = $1 AND {}", at_revision(2)))
        .await?;
    let (expected_orders, expected_services) = revision_arrays(expected);
    match client
        .execute(
            &statement,
            &[&id.get(), &expected_orders, &expected_services],
        )
        .await?
    {
        0 => Err(why_not_written(client, "orders", id.get()).await?),
        _ => Ok(()),
    }
}

/// The order, other than `except`, less than 3 hours from `scheduled_at`, if there is one.
#[tracing::instrument(name = "orders.conflicting_order", skip_all, fields(%scheduled_at, except = ?except.map(OrderId::get)))]
pub async fn conflicting_order(
    client: &impl GenericClient,
    scheduled_at: Timestamp,
    except: Option<OrderId>,
) -> Result<Option<OrderId>, StoreError> {
    find_conflict(client, scheduled_at, except).await
}

/// Creates an order on behalf of the key `actor`, or reports why it cannot be: its time
/// clashes with another order's, or one of its services does not exist.
#[tracing::instrument(name = "orders.insert", skip_all, fields(scheduled_at = %draft.scheduled_at))]
pub async fn insert(
    pool: &Pool,
    draft: &OrderDraft,
    actor: &str,
) -> Result<OrderRecord, StoreError> {
    retry_transient(|| async {
        let client = pool.get().await?;
        insert_once(&client, draft, actor, Savepoint::None).await
    })
    .await
}

/// [`insert`], as one statement of the open `transaction`: a failure rolls back only what the
/// insert did, so the transaction can go on. Not retried: a transient failure (see
/// [`StoreError::is_transient`]) is the caller's to retry, with the whole transaction.
#[tracing::instrument(name = "orders.insert", skip_all, fields(scheduled_at = %draft.scheduled_at))]
pub async fn insert_in(
    transaction: &deadpool_postgres::Transaction<'_>,
    draft: &OrderDraft,
    actor: &str,
) -> Result<OrderRecord, StoreError> {
    insert_once(transaction, draft, actor, Savepoint::Around).await
}

/// Whether a write runs under a savepoint of its own, in a transaction that goes on after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    None,
    Around,
}

/// The links of a new order `o` (the CTE `os`) to the services in the parameter `$3`, in that
/// order, for the insert statements.
const NEW_LINKS: &str = "os AS (
             INSERT INTO order_services (order_id, service_id, position)
             SELECT o.id, requested.service_id, requested.position
             FROM o, unnest($3::bigint[]) WITH ORDINALITY AS requested (service_id, position)
             RETURNING service_id, position
         )";

/// [`insert_once`]'s statement: the order, its links, its event and its services' names and
/// versions, or, when the 3-hour rule refuses it, the order it clashes with, in one round trip.
/// `ON CONFLICT ... DO NOTHING` turns a clash into "no row" rather than an error (cheaper, and
/// it leaves no dead tuple behind); the second branch then looks for the nearest order within
/// 3 hours, which the database skips altogether when the insert went through. The lookup sees
/// the statement's snapshot: an order committed after it began, or deleted since, is not found
/// (`conflicting_order_id` NULL), and the write is tried again. The window is a sub-select so
/// that the planner cannot estimate it from the parameter's value: it then plans the statement
/// once for all values (a generic plan), where with an estimate that a custom plan could
/// better it would plan it anew each time, which cost more than running it.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let no_order = vec!["NULL"; ORDER_COLUMNS.split(',').count()].join(", ");
    format!(
        "WITH o AS (
             INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
             VALUES ($1, $2, $4, $4)
             ON CONFLICT ON CONSTRAINT {THREE_HOUR_RULE} DO NOTHING
             RETURNING {ORDER_ROW}
         ), {NEW_LINKS}, event AS (
             INSERT INTO events (type, actor, subject_id, data)
             SELECT '{created}', $4, o.id, {document} FROM o
         )
         SELECT {ORDER_COLUMNS}, os.position, NULL::bigint AS conflicting_order_id
         FROM o, os JOIN services s ON s.id = os.service_id
         UNION ALL
         SELECT {no_order}, NULL, clash.id
         FROM (SELECT 1) AS refused
         LEFT JOIN LATERAL (
             SELECT id FROM orders
             WHERE order_booking_window(scheduled_at) && (SELECT order_booking_window($1))
             ORDER BY abs(extract(epoch FROM scheduled_at - $1)), id
             LIMIT 1
         ) AS clash ON true
         WHERE NOT EXISTS (SELECT 1 FROM o)
         ORDER BY position",
        created = EventType::OrderCreated.as_str(),
        document = order_document("os"),
    )
});

async fn insert_once(
    client: &impl GenericClient,
    draft: &OrderDraft,
    actor: &str,
    savepoint: Savepoint,
) -> Result<OrderRecord, StoreError> {
    let statement = client.prepare_cached(INSERT.as_str()).await?;
    let service_ids = raw_ids(&draft.service_ids);
    let params: [&(dyn ToSql + Sync); 4] = [
        &draft.scheduled_at.as_datetime(),
        &draft.total_fee.as_decimal(),
        &service_ids,
        &actor,
    ];
    let inserted = if savepoint == Savepoint::Around {
        // Released with the transaction's commit; the statements after it need no other. Sent
        // with the insert, in this order: one round trip.
        let (saved, inserted) = tokio::join!(
            biased;
            client.batch_execute("SAVEPOINT order_insert"),
            client.query(&statement, &params),
        );
        saved?;
        inserted
    } else {
        client.query(&statement, &params).await
    };
    match inserted {
        // The second branch's row: refused, with the order it clashes with (if it was found).
        Ok(rows)
            if rows
                .first()
                .is_some_and(|row| row.get::<_, Option<i64>>("id").is_none()) =>
        {
            let clash: Option<i64> = rows[0].get("conflicting_order_id");
            Err(StoreError::order_time_conflict(clash.map(OrderId::from_db)))
        }
        Ok(rows) => single(fold_orders(&rows)),
        Err(error) => {
            if savepoint == Savepoint::Around {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT order_insert")
                    .await?;
            }
            Err(explain_write_error(client, error, draft, None).await)
        }
    }
}

/// [`INSERT`] for a request sent with an `Idempotency-Key`, that also claims the key and keeps
/// the created order as the key's answer, when it can decide all of it alone: when it takes the
/// key's lock (see [`super::idempotency`]), finds no record of the key at all (an expired one
/// included, which only the transaction replaces), sees every service the order books, and
/// creates the order. Anything else (the key in use or answered before, a clash, a service it
/// does not see) it leaves undone, for the transaction of [`super::idempotency::claim`] to
/// decide. The statement's snapshot is taken before the lock: a request with the key that
/// ended in between is not seen by the record's check, but its record is, by the primary key,
/// whose violation undoes this statement too; a service committed in between would pass the
/// foreign key but be missing from the kept document, so its services must all be seen. The
/// order's document is built once, for its event and its record.
static INSERT_KEPT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH claim AS (
             SELECT {key_lock} AS locked
         ), o AS (
             INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
             SELECT $1::timestamptz, $2::numeric, $4::text, $4::text
             WHERE (SELECT locked FROM claim) AND NOT EXISTS (
                 SELECT 1 FROM idempotency_records WHERE api_key_id = $5 AND idempotency_key = $6
             ) AND (
                 SELECT count(*) FROM services WHERE id = ANY($3::bigint[])
             ) = cardinality($3::bigint[])
             ON CONFLICT ON CONSTRAINT {THREE_HOUR_RULE} DO NOTHING
             RETURNING {ORDER_ROW}
         ), {NEW_LINKS}, document AS (
             SELECT o.id, {document} AS data FROM o
         ), event AS (
             INSERT INTO events (type, actor, subject_id, data)
             SELECT '{created}', $4, id, data FROM document
         ), kept AS (
             INSERT INTO idempotency_records
                 (api_key_id, idempotency_key, fingerprint, status, order_document)
             SELECT $5, $6, $7, 201, data FROM document
         )
         SELECT {ORDER_COLUMNS}, os.position
         FROM o, os JOIN services s ON s.id = os.service_id
         ORDER BY os.position",
        key_lock = key_lock("$5", "$6"),
        created = EventType::OrderCreated.as_str(),
        document = order_document("os"),
    )
});

/// Creates an order on behalf of the key `actor` for the request with `fingerprint` sent with
/// `key` of the API key `api_key_id`, and keeps the order as that key's answer, in one
/// statement; `None` when the statement could not decide the request alone (see
/// [`INSERT_KEPT`]), and changed nothing.
#[tracing::instrument(name = "orders.insert_kept", skip_all, fields(scheduled_at = %draft.scheduled_at, api_key_id = api_key_id))]
pub async fn insert_kept(
    pool: &Pool,
    draft: &OrderDraft,
    actor: &str,
    api_key_id: i64,
    key: &str,
    fingerprint: &[u8; 32],
) -> Result<Option<OrderRecord>, StoreError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(INSERT_KEPT.as_str()).await?;
    let service_ids = raw_ids(&draft.service_ids);
    let params: [&(dyn ToSql + Sync); 7] = [
        &draft.scheduled_at.as_datetime(),
        &draft.total_fee.as_decimal(),
        &service_ids,
        &actor,
        &api_key_id,
        &key,
        &fingerprint.as_slice(),
    ];
    match client.query(&statement, &params).await {
        Ok(rows) if rows.is_empty() => Ok(None),
        Ok(rows) => single(fold_orders(&rows)).map(Some),
        // A service that does not exist, or the record of a request with the key that ended
        // after this statement began: the whole statement is undone.
        Err(error) if violated_constraint(&error).is_some() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Replaces an order's time, fee and services on behalf of the key `actor`, if it is at one
/// of `expected` revisions (any revision when `None`).
pub async fn replace(
    pool: &Pool,
    id: OrderId,
    draft: &OrderDraft,
    expected: Option<&[OrderRevision]>,
    actor: &str,
) -> Result<OrderRecord, StoreError> {
    retry_transient(|| replace_once(pool, id, draft, expected, actor)).await
}

/// The key space of the advisory locks that serialise replaces near one time (see
/// `replace_once`); the two-number form keeps it apart from the migrations' lock.
const SLOT_LOCK_SPACE: i32 = 0x6f72_6473; // "ords"

/// The key space of the advisory locks that serialise the writes of one order (see
/// [`holding_record_lock`]).
const ORDER_LOCK_SPACE: i32 = 0x6f72_6472; // "ordr"

#[tracing::instrument(name = "orders.replace", skip_all, fields(order_id = %id, scheduled_at = %draft.scheduled_at))]
async fn replace_once(
    pool: &Pool,
    id: OrderId,
    draft: &OrderDraft,
    expected: Option<&[OrderRevision]>,
    actor: &str,
) -> Result<OrderRecord, StoreError> {
    let mut client = pool.get().await?;
    let statements = ReplaceStatements::prepare(&client).await?;
    let transaction = client.transaction().await?;
    let service_ids = raw_ids(&draft.service_ids);
    let scheduled_at = draft.scheduled_at.as_datetime();
    let (expected_orders, expected_services) = revision_arrays(expected);
    let order_id = id.get();
    let order_param: [&(dyn ToSql + Sync); 1] = [&order_id];
    let lock_services_params: [&(dyn ToSql + Sync); 1] = [&service_ids];
    let lock_slots_params: [&(dyn ToSql + Sync); 3] = [&SLOT_LOCK_SPACE, &order_id, &scheduled_at];
    let order_and_services: [&(dyn ToSql + Sync); 2] = [&order_id, &service_ids];
    let order_and_actor: [&(dyn ToSql + Sync); 2] = [&order_id, &actor];
    let update_params: [&(dyn ToSql + Sync); 6] = [
        &order_id,
        &scheduled_at,
        &draft.total_fee.as_decimal(),
        &expected_orders,
        &expected_services,
        &actor,
    ];
    // Sent together, in this order, and answered together: one round trip instead of six.
    // Each statement still runs on its own, after the one before it, with a snapshot of its
    // own. The links and the event follow the update whether or not it touched the order:
    // when it did not, the transaction is rolled back, and what they did goes with it.
    let (order_locked, services_locked, slots_locked, updated, relinked, recorded) = tokio::join!(
        biased;
        transaction.query(&statements.lock_order, &order_param),
        transaction.query(&statements.lock_services, &lock_services_params),
        transaction.query(&statements.lock_slots, &lock_slots_params),
        transaction.query_opt(&statements.update, &update_params),
        transaction.query(&statements.relink, &order_and_services),
        transaction.execute(&statements.record_event, &order_and_actor),
    );
    // The first failure is the one that counts: the statements after it were refused only
    // because the transaction had failed.
    let written = (|| {
        order_locked?;
        services_locked?;
        slots_locked?;
        let Some(row) = updated? else {
            return Ok(None);
        };
        let services = relinked?.iter().map(booked_service).collect();
        recorded?;
        Ok(Some(order_from_row(&row, services)))
    })();
    match settle(transaction, written).await? {
        Settled::Written(order) => Ok(order),
        Settled::NoRow => Err(why_not_written(&client, "orders", id.get()).await?),
        Settled::Failed(error) => Err(explain_write_error(&client, error, draft, Some(id)).await),
    }
}

/// The statements of a replace, in the order they run, each taking the locks the comments
/// say, so that replaces never wait on each other in a cycle.
struct ReplaceStatements {
    /// First the order itself (see `holding_record_lock`): before any statement of the
    /// transaction writes, and so before it has an id.
    lock_order: Statement,
    /// Next the services the order will book, as their foreign key checks would later anyway:
    /// a delete of one of them then waits for this replace, or this replace for it, before
    /// either writes.
    lock_services: Statement,
    /// Then the 3-hour slots around the order's old and new times. An UPDATE cannot use
    /// `ON CONFLICT`, so two replaces moving orders near each other would each insert their
    /// new time into the exclusion index and then wait for the other's: a deadlock. Time is
    /// cut into 3-hour slots; an order at t takes slots k and k+1 (k = its slot), so any two
    /// orders less than 3 hours apart share one and replaces near each other take turns
    /// instead. Sorted, so that the slot locks themselves cannot deadlock.
    ///
    /// The old time is read before the locks are granted, and a replace of the same order
    /// that commits meanwhile moves it: this one then holds the slots of a time the order has
    /// left. That is harmless: every wait in the exclusion index that this replace can cause
    /// is on its own new time, whose slots it holds. Creates and deletes take no slot locks:
    /// a create (`ON CONFLICT DO NOTHING`) checks before it inserts, and a delete inserts
    /// nothing, so neither waits on a replace's new time while holding up its own; the rare
    /// deadlock left between a create and a replace is retried.
    lock_slots: Statement,
    /// Then the order, by updating it. A concurrent replace of the same order has waited for
    /// this one at the slots of the order's old time already, or waits here; either way the
    /// next statement's snapshot, taken after the lock, sees the links that replace committed.
    /// (In one statement they would be invisible to the link deletion and survive it.)
    update: Statement,
    /// The links to drop and the links to upsert: disjoint sets of rows, which is what lets
    /// them share a statement.
    relink: Statement,
    record_event: Statement,
}

static LOCK_ORDER: LazyLock<String> =
    LazyLock::new(|| format!("SELECT 1 WHERE {}", holding_record_lock(ORDER_LOCK_SPACE)));

static UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE orders
         SET scheduled_at = $2, total_fee = $3, version = version + 1, updated_at = now(),
             updated_by = $6
         WHERE id = $1 AND {}
         RETURNING {ORDER_ROW}",
        at_revision(4)
    )
});

static RECORD_UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events (type, actor, subject_id, data)
         SELECT '{updated}', $2, o.id, {document} FROM orders o WHERE o.id = $1",
        updated = EventType::OrderUpdated.as_str(),
        document = order_document(STORED_LINKS),
    )
});

impl ReplaceStatements {
    /// Prepared on `client`'s connection: once, then from its cache.
    async fn prepare(client: &impl GenericClient) -> Result<Self, StoreError> {
        Ok(Self {
            lock_order: client.prepare_cached(LOCK_ORDER.as_str()).await?,
            lock_services: client
                .prepare_cached(
                    "SELECT 1 FROM services WHERE id = ANY ($1::bigint[]) ORDER BY id FOR KEY SHARE",
                )
                .await?,
            lock_slots: client
                .prepare_cached(
                    "SELECT pg_advisory_xact_lock($1, slot)
                     FROM (
                         SELECT DISTINCT floor(extract(epoch FROM t) / 10800)::int + step AS slot
                         FROM (SELECT $3::timestamptz UNION ALL
                               SELECT scheduled_at FROM orders WHERE id = $2) AS times (t),
                              (VALUES (0), (1)) AS steps (step)
                     ) AS slots
                     ORDER BY slot",
                )
                .await?,
            update: client.prepare_cached(UPDATE.as_str()).await?,
            relink: client
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
                     SELECT s.id AS service_id, s.name AS service_name, s.version AS service_version
                     FROM os JOIN services s ON s.id = os.service_id
                     ORDER BY os.position",
                )
                .await?,
            record_event: client.prepare_cached(RECORD_UPDATE.as_str()).await?,
        })
    }
}

/// Deletes an order, if it is at one of `expected` revisions (any when `None`). Its slot in
/// the calendar is free again at once.
#[tracing::instrument(name = "orders.delete", skip_all, fields(order_id = %id))]
pub async fn delete(
    pool: &Pool,
    id: OrderId,
    expected: Option<&[OrderRevision]>,
    actor: &str,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    // The event shows the order as it was: the statement's snapshot still holds its links,
    // which the foreign key's cascade removes only after it.
    let statement = client
        .prepare_cached(&format!(
            "WITH o AS (
                 DELETE FROM orders WHERE id = $1 AND {condition} AND {locked}
                 RETURNING {ORDER_ROW}
             ), event AS (
                 INSERT INTO events (type, actor, subject_id, data)
                 SELECT '{deleted}', $4, o.id, {document} FROM o
             )
             SELECT 1 FROM o",
            condition = at_revision(2),
            locked = holding_record_lock(ORDER_LOCK_SPACE),
            deleted = EventType::OrderDeleted.as_str(),
            document = order_document(STORED_LINKS),
        ))
        .await?;
    let (expected_orders, expected_services) = revision_arrays(expected);
    let deleted = client
        .query(
            &statement,
            &[&id.get(), &expected_orders, &expected_services, &actor],
        )
        .await?;
    if deleted.is_empty() {
        return Err(why_not_written(&client, "orders", id.get()).await?);
    }
    Ok(())
}

/// The orders of a page, `o`, chosen on the (scheduled_at, id) index by [`list`]'s parameters.
/// A NULL parameter switches its filter off.
fn page_of_orders() -> String {
    format!(
        "o AS (
             SELECT {ORDER_ROW}
             FROM orders
             WHERE ($1::timestamptz IS NULL OR scheduled_at >= $1)
               AND ($2::timestamptz IS NULL OR scheduled_at < $2)
               AND ($3::bigint IS NULL OR EXISTS (
                       SELECT 1 FROM order_services f
                       WHERE f.order_id = orders.id AND f.service_id = $3))
               AND ($4::timestamptz IS NULL OR (scheduled_at, id) > ($4, $5::bigint))
             ORDER BY scheduled_at, id
             LIMIT $6
         )"
    )
}

/// [`list`]'s statement. The page is chosen first on the (scheduled_at, id) index, then
/// joined to its services: one round trip, and no query per order. A NULL parameter switches
/// its filter off.
static LIST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {page}
         SELECT {ORDER_COLUMNS}
         FROM o
         JOIN order_services os ON os.order_id = o.id
         JOIN services s ON s.id = os.service_id
         ORDER BY o.scheduled_at, o.id, os.position",
        page = page_of_orders(),
    )
});

/// [`list`]'s statement for pages over [`SHARED_PAGE_LIMIT`] orders. Sorting tens of thousands
/// of rows (a thousand orders of fifty services) by order and position took the database more
/// than twice as long as reading them, spilling to disk; here each order's services are read
/// by its id as the orders come in order, with nothing to sort, and the service puts each
/// order's services in their order (`position`). The `OFFSET 0` keeps the planner from
/// flattening that back into one join to be sorted.
static LIST_LARGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {page}
         SELECT {ORDER_COLUMNS}, s.position
         FROM o
         CROSS JOIN LATERAL (
             SELECT os.position, s.id, s.name, s.version
             FROM order_services os JOIN services s ON s.id = os.service_id
             WHERE os.order_id = o.id
             OFFSET 0
         ) AS s
         ORDER BY o.scheduled_at, o.id",
        page = page_of_orders(),
    )
});

/// One page of orders in (scheduled_at, id) order, starting after `after`: each order is
/// handed to `each` as soon as its rows are in, and the key the next page starts after is
/// returned, if there is a next page. A large page (up to 1000 orders of 50 services, 50,000
/// rows) is read row by row, so neither its rows nor its orders are ever in memory at once.
#[tracing::instrument(name = "orders.list", skip_all, fields(limit = limit))]
pub async fn list(
    reader: &Reader,
    filter: &OrderFilter,
    after: Option<OrderCursor>,
    limit: usize,
    each: impl FnMut(OrderRecord),
) -> Result<Option<OrderCursor>, StoreError> {
    let overfetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let params: [&(dyn ToSql + Sync); 6] = [
        &filter.from.map(|t| t.as_datetime()),
        &filter.to.map(|t| t.as_datetime()),
        &filter.service_id.map(ServiceId::get),
        &after.map(|cursor| cursor.scheduled_at),
        &after.map(|cursor| cursor.id.get()),
        &overfetch,
    ];
    if limit <= SHARED_PAGE_LIMIT {
        let mut page = PageOfOrders::new(limit, Positions::InOrder, each);
        for row in &reader.query(LIST.as_str(), &params).await? {
            if page.take(row).is_break() {
                break;
            }
        }
        Ok(page.finish())
    } else {
        let mut page = PageOfOrders::new(limit, Positions::ToSort, each);
        reader
            .for_each_row_alone(LIST_LARGE.as_str(), &params, |row| page.take(row))
            .await?;
        Ok(page.finish())
    }
}

/// Folds the rows of a page of orders (one row per booked service, an order's rows adjacent)
/// into orders, handing each on once its rows are all in. It is given up to `limit + 1`
/// orders: the extra one only proves that another page exists, and the last one handed on is
/// where that page starts after.
struct PageOfOrders<F> {
    limit: usize,
    positions: Positions,
    each: F,
    /// The order whose rows are being read, and its services' positions (when they are to be
    /// sorted by them).
    current: Option<OrderRecord>,
    current_positions: Vec<i16>,
    handed_on: usize,
    last: Option<OrderCursor>,
    more: bool,
}

/// Whether an order's rows come in the order of its services, or carry a `position` to put
/// them in order by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Positions {
    InOrder,
    ToSort,
}

impl<F: FnMut(OrderRecord)> PageOfOrders<F> {
    fn new(limit: usize, positions: Positions, each: F) -> Self {
        Self {
            limit,
            positions,
            each,
            current: None,
            current_positions: Vec::new(),
            handed_on: 0,
            last: None,
            more: false,
        }
    }

    /// Takes one row; says to stop once the order past the page's end begins.
    fn take(&mut self, row: &Row) -> std::ops::ControlFlow<()> {
        let id = OrderId::from_db(row.get("id"));
        let service = booked_service(row);
        if self.positions == Positions::ToSort {
            self.current_positions.push(row.get("position"));
        }
        if let Some(order) = self.current.as_mut().filter(|order| order.id == id) {
            order.book(service);
            return std::ops::ControlFlow::Continue(());
        }
        // The row begins another order: its position is that order's first.
        let first_position = self.current_positions.pop();
        self.hand_on_current();
        if self.handed_on == self.limit {
            self.more = true;
            return std::ops::ControlFlow::Break(());
        }
        self.current = Some(order_from_row(row, vec![service]));
        self.current_positions.extend(first_position);
        std::ops::ControlFlow::Continue(())
    }

    fn hand_on_current(&mut self) {
        if let Some(mut order) = self.current.take() {
            if self.positions == Positions::ToSort {
                let mut positioned: Vec<(i16, BookedService)> = self
                    .current_positions
                    .drain(..)
                    .zip(order.services.drain(..))
                    .collect();
                positioned.sort_by_key(|(position, _)| *position);
                order.services = positioned.into_iter().map(|(_, service)| service).collect();
            }
            self.last = Some(OrderCursor {
                scheduled_at: order.scheduled_at.as_datetime(),
                id: order.id,
            });
            self.handed_on += 1;
            (self.each)(order);
        }
    }

    /// Hands on the last order, and says where the next page starts after, if there is one.
    fn finish(mut self) -> Option<OrderCursor> {
        self.hand_on_current();
        if self.more { self.last } else { None }
    }
}

/// Turns a failed write into its meaning, looking up what the error does not say. Runs after
/// the failed statement's transaction has ended, since an aborted one answers no queries.
async fn explain_write_error(
    client: &impl GenericClient,
    error: tokio_postgres::Error,
    draft: &OrderDraft,
    updating: Option<OrderId>,
) -> StoreError {
    let explained = match violated_constraint(&error) {
        Some(THREE_HOUR_RULE) => find_conflict(client, draft.scheduled_at, updating)
            .await
            .map(StoreError::order_time_conflict),
        // A link names a service that does not exist (any more).
        Some(SERVICE_EXISTS) => super::services::find_missing(client, &draft.service_ids)
            .await
            .map(StoreError::UnknownServices),
        _ => Ok(error.into()),
    };
    explained.unwrap_or_else(|lookup_error| lookup_error)
}

/// The order, other than `except`, whose 3-hour window overlaps the one at `scheduled_at`.
/// Runs after the failed write, so the answer can be "none any more". (The window is a
/// sub-select for the reason [`INSERT`] gives.)
#[tracing::instrument(name = "orders.find_conflict", skip_all, fields(%scheduled_at))]
async fn find_conflict(
    client: &impl GenericClient,
    scheduled_at: Timestamp,
    except: Option<OrderId>,
) -> Result<Option<OrderId>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT id FROM orders
             WHERE order_booking_window(scheduled_at) && (SELECT order_booking_window($1))
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
    Ok(row.map(|row| OrderId::from_db(row.get("id"))))
}
