//! The brief's sample data.
//!
//! The brief gives its three orders one timestamp, which the 3-hour rule forbids; order 223
//! keeps that time and 224 and 225 follow three and six hours later. Seeding is idempotent:
//! rows that exist (by id, or by a unique name or time slot) are left as they are.

use deadpool_postgres::Pool;

use super::{
    StoreError,
    shared_sql::{SERVICE_DOCUMENT, STORED_LINKS, order_document},
};
use crate::domain::EventType;

/// What one run of [`load`] added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    pub services_added: u64,
    pub orders_added: u64,
}

const SERVICES_SQL: &str = "
    INSERT INTO services (id, name, created_by, updated_by)
    OVERRIDING SYSTEM VALUE
    VALUES (123, 'Inspection', 'seed', 'seed'), (789, 'Testing', 'seed', 'seed'),
           (456, 'Analysis', 'seed', 'seed')
    ON CONFLICT DO NOTHING";

/// Orders and their links in one statement: links are added only for orders added now, and
/// only to services that exist.
const ORDERS_SQL: &str = "
    WITH sample (id, scheduled_at, total_fee, service_id) AS (
        VALUES (223::bigint, '2022-11-01T11:11:11.111Z'::timestamptz, 100::numeric, 123::bigint),
               (224, '2022-11-01T14:11:11.111Z', 100, 789),
               (225, '2022-11-01T17:11:11.111Z', 100, 456)
    ), added AS (
        INSERT INTO orders (id, scheduled_at, total_fee, created_by, updated_by)
        OVERRIDING SYSTEM VALUE
        SELECT id, scheduled_at, total_fee, 'seed', 'seed' FROM sample
        WHERE EXISTS (SELECT 1 FROM services WHERE services.id = sample.service_id)
        ON CONFLICT DO NOTHING
        RETURNING id
    ), linked AS (
        INSERT INTO order_services (order_id, service_id, position)
        SELECT sample.id, sample.service_id, 1
        FROM sample JOIN added ON added.id = sample.id
    )
    SELECT count(*) AS orders_added FROM added";

/// The events of what [`load`] added: the sample rows this transaction wrote (their `xmin`
/// is its id). The feed shows the sample data like any other change.
fn events_sql() -> String {
    format!(
        "INSERT INTO events (type, actor, subject_id, data)
         SELECT '{service_created}', 'seed', s.id, {SERVICE_DOCUMENT}
         FROM services s
         WHERE s.id IN (123, 789, 456) AND s.xmin = pg_current_xact_id()::xid
         UNION ALL
         SELECT '{order_created}', 'seed', o.id, {order_document}
         FROM orders o
         WHERE o.id IN (223, 224, 225) AND o.xmin = pg_current_xact_id()::xid",
        service_created = EventType::ServiceCreated.as_str(),
        order_created = EventType::OrderCreated.as_str(),
        order_document = order_document(STORED_LINKS),
    )
}

#[tracing::instrument(name = "seed.load", skip_all)]
pub async fn load(pool: &Pool) -> Result<SeedReport, StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let services_added = transaction.execute(SERVICES_SQL, &[]).await?;
    let orders_added = transaction
        .query_one(ORDERS_SQL, &[])
        .await?
        .get::<_, i64>("orders_added");
    if services_added + u64::try_from(orders_added).unwrap_or_default() > 0 {
        transaction.execute(&events_sql(), &[]).await?;
    }
    transaction.commit().await?;
    Ok(SeedReport {
        services_added,
        orders_added: u64::try_from(orders_added).unwrap_or_default(),
    })
}
