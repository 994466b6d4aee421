//! Domain types: values that can only be constructed valid.
//!
//! Each type's `parse` is the single place its rule is checked; the rest of the code takes the
//! type as proof and never re-checks. Nothing here knows about HTTP or SQL.

mod api_key;
mod free_slots;
mod ids;
mod money;
mod order;
mod service_name;
mod timestamp;

pub use api_key::{
    KeyName, KeyNameError, LOCAL_KEY_NAME, MAX_RATE_PER_SECOND, RateLimit, SEED_ACTOR, Scope,
    UnknownScope,
};
pub use free_slots::{FreeSlot, MAX_WINDOW_DAYS, ORDER_CLEARANCE, SlotWindow, SlotWindowError};
pub use ids::{OrderId, ServiceId};
pub use money::{Money, MoneyError};
pub use order::{MAX_SERVICES_PER_ORDER, OrderDraft, OrderDraftError};
pub use service_name::{ServiceName, ServiceNameError};
pub use timestamp::{Timestamp, TimestampError};
