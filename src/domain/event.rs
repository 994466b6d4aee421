//! The change feed's records: an event, what it is about, and where in the feed it stands.

use super::{OrderRecord, ServiceRecord, Timestamp};

/// What changed, as the feed names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    OrderCreated,
    OrderUpdated,
    OrderDeleted,
    ServiceCreated,
    ServiceUpdated,
    ServiceDeleted,
}

impl EventType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreated => "order.created",
            Self::OrderUpdated => "order.updated",
            Self::OrderDeleted => "order.deleted",
            Self::ServiceCreated => "service.created",
            Self::ServiceUpdated => "service.updated",
            Self::ServiceDeleted => "service.deleted",
        }
    }

    /// The type a feed name stands for.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::OrderCreated,
            Self::OrderUpdated,
            Self::OrderDeleted,
            Self::ServiceCreated,
            Self::ServiceUpdated,
            Self::ServiceDeleted,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// A place in the feed: just after the event at (`tx`, `id`). `(0, 0)` is its very start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPosition {
    pub tx: i64,
    pub id: i64,
}

impl FeedPosition {
    pub const START: Self = Self { tx: 0, id: 0 };
}

/// The record an event carries: after the change, or just before it for a delete.
#[derive(Debug, Clone, PartialEq)]
pub enum EventSubject {
    Order(OrderRecord),
    Service(ServiceRecord),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub position: FeedPosition,
    pub kind: EventType,
    pub occurred_at: Timestamp,
    /// The name of the API key that made the change.
    pub actor: String,
    pub subject: EventSubject,
}

/// One page of the feed, and the position to read on from.
#[derive(Debug, Clone)]
pub struct FeedPage {
    pub events: Vec<EventRecord>,
    /// After the last event of the page, or where the read started when it has none.
    pub next: FeedPosition,
}

/// Where a read of the feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStart {
    /// At the oldest event kept.
    Oldest,
    /// After the newest event a reader can be given now: only what comes next.
    Now,
    /// After a position the feed handed out.
    After(FeedPosition),
}
