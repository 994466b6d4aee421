//! The application's one error enum: the outcomes an operation can refuse with, in terms of
//! the domain. The HTTP layer maps each to its status and problem code, once.

use std::fmt;

use crate::{
    domain::{OrderDraftError, OrderId},
    storage::StoreError,
};

/// The kinds of record the API serves, for messages that name one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Order,
    Service,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Order => "order",
            Self::Service => "service",
        })
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no {resource} has the id {id:?}")]
    NotFound { resource: Resource, id: String },
    /// The order's list of services breaks a rule of its own (empty, too long, repeated).
    #[error("services: {0}")]
    InvalidServices(OrderDraftError),
    /// Service ids, as the client wrote them, that name no service.
    #[error("unknown services: {0:?}")]
    UnknownServices(Vec<String>),
    #[error("the order's time is less than 3 hours from another order's")]
    OrderTimeConflict {
        conflicting_order_id: Option<OrderId>,
    },
    #[error("another service has that name")]
    ServiceNameTaken,
    #[error("the service is booked by at least one order")]
    ServiceInUse,
    #[error("the record is not at a version the caller named")]
    PreconditionFailed,
    #[error("the Idempotency-Key was used with another request")]
    IdempotencyKeyReused,
    #[error("a request with the same Idempotency-Key is being processed")]
    IdempotencyKeyInUse,
    /// A change feed cursor that is neither the feed's start nor an event's position.
    #[error("the cursor is not one the change feed issued")]
    UnknownCursor,
    /// A change feed cursor before the oldest event kept.
    #[error("the events after the cursor are purged")]
    CursorExpired,
    #[error("the database cannot be reached")]
    Unavailable(#[source] Cause),
    #[error("the database did not answer in time")]
    TimedOut(#[source] Cause),
    #[error("concurrent writes kept aborting this one")]
    Contended(#[source] Cause),
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl AppError {
    /// Whether this is a timeout of our own bound on a database that answered nothing at all
    /// (see [`crate::storage::within`]): unlike a statement the database cancelled, what was
    /// sent may still be carried out once it resumes.
    pub fn went_unanswered(&self) -> bool {
        matches!(self, Self::TimedOut(cause) if cause.is::<crate::storage::NoAnswer>())
    }

    /// Whether another try of the same write can succeed (see [`StoreError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Contended(_)
                | Self::OrderTimeConflict {
                    conflicting_order_id: None
                }
        )
    }

    pub fn not_found(resource: Resource, id: &str) -> Self {
        Self::NotFound {
            resource,
            id: id.to_owned(),
        }
    }

    /// Maps a storage error from an operation on the `resource` with `id`, so that "no such
    /// record" names what was asked for.
    pub fn on(resource: Resource, id: &str) -> impl FnOnce(StoreError) -> Self + '_ {
        move |error| match error {
            StoreError::NotFound => Self::not_found(resource, id),
            other => other.into(),
        }
    }
}

/// Storage's outcomes in the application's terms. A bare "no such record" here is a fault:
/// operations that can meet one map it with [`AppError::on`], which knows what was asked for.
impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::Internal(Box::new(error)),
            StoreError::VersionMismatch => Self::PreconditionFailed,
            StoreError::OrderTimeConflict {
                conflicting_order_id,
            } => Self::OrderTimeConflict {
                conflicting_order_id,
            },
            StoreError::ServiceNameTaken => Self::ServiceNameTaken,
            StoreError::ServiceInUse => Self::ServiceInUse,
            // Key names are the CLI's business; no operation of the API meets this.
            StoreError::KeyNameTaken => Self::Internal(Box::new(error)),
            StoreError::UnknownServices(ids) => {
                Self::UnknownServices(ids.iter().map(ToString::to_string).collect())
            }
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            StoreError::TimedOut(cause) => Self::TimedOut(cause),
            StoreError::Contention(cause) => Self::Contended(Box::new(cause)),
            StoreError::Database(cause) => Self::Internal(Box::new(cause)),
            StoreError::CorruptEvent(_) | StoreError::CorruptAnswer => {
                Self::Internal(Box::new(error))
            }
        }
    }
}
