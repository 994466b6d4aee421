//! An order: what a client asks for when it creates or replaces one ([`OrderDraft`]), and
//! what is stored ([`OrderRecord`]), with the revision its ETag stands for.

use std::{collections::HashSet, fmt::Display, hash::Hash};

use chrono::{DateTime, Utc};

use super::{Money, OrderId, ServiceId, Timestamp};

pub const MAX_SERVICES_PER_ORDER: usize = 50;

/// A complete, valid order as a client wants it to be. Whether its time clashes with another
/// order (the 3-hour rule) and whether its services exist are questions for the database,
/// which answers them atomically with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDraft {
    pub scheduled_at: Timestamp,
    pub total_fee: Money,
    /// In the order the client listed them; never empty, never repeated.
    pub service_ids: Vec<ServiceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderDraftError {
    #[error("must name at least one service")]
    NoServices,
    #[error("must name at most {MAX_SERVICES_PER_ORDER} services")]
    TooManyServices,
    #[error("names service {0:?} more than once")]
    DuplicateService(String),
}

impl OrderDraft {
    pub fn new(
        scheduled_at: Timestamp,
        total_fee: Money,
        service_ids: Vec<ServiceId>,
    ) -> Result<Self, OrderDraftError> {
        Self::check_services(&service_ids)?;
        Ok(Self {
            scheduled_at,
            total_fee,
            service_ids,
        })
    }

    /// The rules on an order's list of services, on their own so that a caller can report
    /// them before it has every other field.
    /// Generic so that the same rules apply to the ids exactly as a client wrote them.
    pub fn check_services<T: Eq + Hash + Display>(
        service_ids: &[T],
    ) -> Result<(), OrderDraftError> {
        if service_ids.is_empty() {
            return Err(OrderDraftError::NoServices);
        }
        if service_ids.len() > MAX_SERVICES_PER_ORDER {
            return Err(OrderDraftError::TooManyServices);
        }
        let mut seen = HashSet::with_capacity(service_ids.len());
        for id in service_ids {
            if !seen.insert(id) {
                return Err(OrderDraftError::DuplicateService(id.to_string()));
            }
        }
        Ok(())
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    pub id: OrderId,
    pub scheduled_at: Timestamp,
    pub total_fee: Money,
    pub services: Vec<BookedService>,
    pub revision: OrderRevision,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The name of the API key that created the order.
    pub created_by: String,
    /// The name of the API key that last replaced it.
    pub updated_by: String,
}

/// What an order's representation is at: it changes whenever the order or one of the
/// services it books changes. Versions only grow, and an order's services are fixed for each
/// of its versions, so two different representations never share a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRevision {
    /// The order row's own version, bumped by every replace.
    pub order: i64,
    /// The sum of the versions of the services it books, bumped by any of their renames.
    pub services: i64,
}

/// A service as an order shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedService {
    pub id: ServiceId,
    pub name: String,
    /// The service's own version, which its name belongs to.
    pub version: i64,
}

/// Where a page of orders starts: after this (scheduled_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderCursor {
    pub scheduled_at: DateTime<Utc>,
    pub id: OrderId,
}

impl OrderRecord {
    /// Adds a booked service, whose version the order's revision then counts.
    pub fn book(&mut self, service: BookedService) {
        self.revision.services += service.version;
        self.services.push(service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[i64]) -> Vec<ServiceId> {
        raw.iter().copied().map(ServiceId::from_db).collect()
    }

    #[test]
    fn one_to_fifty_distinct_services_are_accepted() {
        assert_eq!(OrderDraft::check_services(&ids(&[123])), Ok(()));
        let fifty: Vec<i64> = (1..=50).collect();
        assert_eq!(OrderDraft::check_services(&ids(&fifty)), Ok(()));
    }

    #[test]
    fn empty_oversized_and_repeated_lists_are_refused() {
        assert_eq!(
            OrderDraft::check_services::<ServiceId>(&[]),
            Err(OrderDraftError::NoServices)
        );
        let fifty_one: Vec<i64> = (1..=51).collect();
        assert_eq!(
            OrderDraft::check_services(&ids(&fifty_one)),
            Err(OrderDraftError::TooManyServices)
        );
        assert_eq!(
            OrderDraft::check_services(&ids(&[123, 456, 123])),
            Err(OrderDraftError::DuplicateService("123".to_owned()))
        );
    }
}
