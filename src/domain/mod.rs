//! The domain: values that can only be constructed valid, with their rules, and the records
//! that cross layers (an order, a service, an event, a kept answer, an API key).
//!
//! Each type's `parse` is the single place its rule is checked; the rest of the code takes the
//! type as proof and never re-checks. Records are defined here, below storage and the
//! application, so that every layer speaks of them in the same terms. Nothing here knows about
//! HTTP or SQL.

mod api_key;
mod event;
mod free_slots;
mod idempotency;
mod ids;
mod money;
mod order;
mod page;
mod pool;
mod service;
mod service_name;
mod timestamp;

pub use api_key::{
    ActiveKey, KeyName, KeyNameError, KeyRecord, LOCAL_KEY_NAME, MAX_RATE_PER_SECOND, RateLimit,
    Revoked, SEED_ACTOR, Scope, StoredSecret, UnknownScope,
};
pub use event::{EventRecord, EventSubject, EventType, FeedPage, FeedPosition, FeedStart};
pub use free_slots::{FreeSlot, MAX_WINDOW_DAYS, ORDER_CLEARANCE, SlotWindow, SlotWindowError};
pub use idempotency::{IdempotencyKey, MAX_IDEMPOTENCY_KEY_CHARS, StoredAnswer};
pub use ids::{OrderId, ServiceId};
pub use money::{Money, MoneyError};
pub use order::{
    BookedService, MAX_SERVICES_PER_ORDER, OrderCursor, OrderDraft, OrderDraftError, OrderRecord,
    OrderRevision,
};
pub use page::Page;
pub use pool::PoolStatus;
pub use service::ServiceRecord;
pub use service_name::{ServiceName, ServiceNameError};
pub use timestamp::{Timestamp, TimestampError};
