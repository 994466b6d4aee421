//! A service as stored: what orders book.

use super::{ServiceId, Timestamp};

/// A service as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub id: ServiceId,
    pub name: String,
    /// Bumped on every change.
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The name of the API key that created the service.
    pub created_by: String,
    /// The name of the API key that last renamed it.
    pub updated_by: String,
}
