//! The SQL that the statements of several tables share, so that no storage module needs
//! another's: the JSON documents that events and kept answers hold (built by the statement
//! that makes the change, and read back here), the lock an idempotency key is claimed with,
//! and the constraint an order's links to its services are held by.
//!
//! A document is storage's own form of a record, not the API's: it keeps the versions a
//! record's ETag is made of, and the HTTP layer shows the record it decodes to exactly as `GET`
//! shows it.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::{
    BookedService, Money, OrderId, OrderRecord, OrderRevision, ServiceId, ServiceRecord, Timestamp,
};

/// The JSON document of the service row aliased `s`, as events keep it.
pub(super) const SERVICE_DOCUMENT: &str = "jsonb_build_object(
    'id', s.id, 'name', s.name, 'version', s.version, 'created_at', s.created_at,
    'updated_at', s.updated_at, 'created_by', s.created_by, 'updated_by', s.updated_by)";

/// The JSON document of the order row aliased `o`, booking the services that `links` (a
/// relation of `service_id, position` rows, which may refer to `o`) lists.
pub(super) fn order_document(links: &str) -> String {
    format!(
        "jsonb_build_object(
             'id', o.id, 'scheduled_at', o.scheduled_at, 'total_fee', o.total_fee::text,
             'version', o.version, 'created_at', o.created_at, 'updated_at', o.updated_at,
             'created_by', o.created_by, 'updated_by', o.updated_by,
             'services', (
                 SELECT coalesce(jsonb_agg(jsonb_build_object(
                            'id', s.id, 'name', s.name, 'version', s.version)
                        ORDER BY l.position), '[]'::jsonb)
                 FROM {links} AS l JOIN services s ON s.id = l.service_id))"
    )
}

/// The links of the order row aliased `o`, as they are stored, for [`order_document`].
pub(super) const STORED_LINKS: &str =
    "(SELECT service_id, position FROM order_services WHERE order_id = o.id)";

/// The order an [`order_document`] holds, or `None` when the text is not one.
pub(super) fn order_from_document(document: &str) -> Option<OrderRecord> {
    serde_json::from_str::<OrderDocument>(document)
        .ok()
        .and_then(OrderDocument::into_record)
}

/// The service a [`SERVICE_DOCUMENT`] holds, or `None` when the text is not one.
pub(super) fn service_from_document(document: &str) -> Option<ServiceRecord> {
    serde_json::from_str::<ServiceDocument>(document)
        .ok()
        .and_then(ServiceDocument::into_record)
}

/// [`order_document`] as read back.
#[derive(Deserialize)]
struct OrderDocument {
    id: i64,
    scheduled_at: DateTime<Utc>,
    total_fee: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: String,
    updated_by: String,
    services: Vec<BookedServiceDocument>,
}

#[derive(Deserialize)]
struct BookedServiceDocument {
    id: i64,
    name: String,
    version: i64,
}

impl OrderDocument {
    fn into_record(self) -> Option<OrderRecord> {
        let services: Vec<BookedService> = self
            .services
            .into_iter()
            .map(|service| BookedService {
                id: ServiceId::from_db(service.id),
                name: service.name,
                version: service.version,
            })
            .collect();
        Some(OrderRecord {
            id: OrderId::from_db(self.id),
            scheduled_at: timestamp(self.scheduled_at)?,
            total_fee: Money::parse(&self.total_fee).ok()?,
            revision: OrderRevision {
                order: self.version,
                services: services.iter().map(|service| service.version).sum(),
            },
            services,
            created_at: timestamp(self.created_at)?,
            updated_at: timestamp(self.updated_at)?,
            created_by: self.created_by,
            updated_by: self.updated_by,
        })
    }
}

/// [`SERVICE_DOCUMENT`] as read back.
#[derive(Deserialize)]
struct ServiceDocument {
    id: i64,
    name: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: String,
    updated_by: String,
}

impl ServiceDocument {
    fn into_record(self) -> Option<ServiceRecord> {
        Some(ServiceRecord {
            id: ServiceId::from_db(self.id),
            name: self.name,
            version: self.version,
            created_at: timestamp(self.created_at)?,
            updated_at: timestamp(self.updated_at)?,
            created_by: self.created_by,
            updated_by: self.updated_by,
        })
    }
}

fn timestamp(instant: DateTime<Utc>) -> Option<Timestamp> {
    Timestamp::from_utc(instant).ok()
}

/// The SQL that tries to take the transaction-scoped lock on the `Idempotency-Key` in the
/// parameter `key` of the API key whose id is in the parameter `api_key_id`: true when this
/// transaction holds it (it may have held it already), false when another does.
pub(super) fn key_lock(api_key_id: &str, key: &str) -> String {
    format!("pg_try_advisory_xact_lock(hashtextextended({api_key_id}::bigint || ':' || {key}, 0))")
}

/// The foreign key from an order's links to the services they book.
pub(super) const SERVICE_EXISTS: &str = "order_services_service_exists";

pub(super) fn raw_ids(ids: &[ServiceId]) -> Vec<i64> {
    ids.iter().map(|id| id.get()).collect()
}

#[cfg(test)]
mod tests {
    use super::order_document;

    fn collapsed(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The benchmark's pgbench scripts repeat the order document's SQL so that pgbench runs
    /// the statements the service runs; this keeps the copies equal to the one definition.
    #[test]
    fn the_benchmarks_sql_builds_the_order_document_the_service_builds() {
        let this_order_links =
            "(SELECT service_id, position FROM order_services WHERE order_id = o.id)";
        let scripts = [
            (
                "order_conflict",
                include_str!("../../scripts/bench-kinds/order_conflict.sql"),
                "os",
            ),
            (
                "order_create",
                include_str!("../../scripts/bench-kinds/order_create.sql"),
                "os",
            ),
            (
                "order_create_idempotent",
                include_str!("../../scripts/bench-kinds/order_create_idempotent.sql"),
                "os",
            ),
            (
                "order_replace",
                include_str!("../../scripts/bench-kinds/order_replace.sql"),
                this_order_links,
            ),
        ];
        for (name, script, links) in scripts {
            assert!(
                collapsed(script).contains(&collapsed(&order_document(links))),
                "scripts/bench-kinds/{name}.sql no longer builds the document that storage/shared_sql.rs builds"
            );
        }
    }
}
