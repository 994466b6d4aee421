//! `/events`: the change feed, every committed change of an order or a service in commit
//! order, for systems that keep copies or react to changes.
//!
//! An event's `data` is the record exactly as `GET` showed it right after the change (just
//! before it, for a delete), with its `etag`. The feed's cursor is opaque: the URL-safe base64
//! of the position after an event, prefixed with a version.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use poem::web::Data;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Union, param::Query, payload::Json};

use super::{
    ApiTags,
    auth::ApiKey,
    conditional::etag,
    orders::Order,
    pagination::{self, PageSize},
    problem::{
        ApiError, ErrorCode,
        documentation::{OperationError, operation_codes},
    },
    services::Service,
};
use crate::{
    app::{
        self, AppState,
        events::{EventRecord, EventSubject, EventType, FeedPosition, FeedStart},
    },
    domain::Timestamp,
};

/// What an event is about.
#[derive(Debug, Clone, Object)]
pub struct Subject {
    pub kind: SubjectKind,
    /// The order's or the service's id.
    pub id: String,
}

#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SubjectKind {
    Order,
    Service,
}

/// An order as `GET /orders/{id}` showed it, with its `ETag`.
#[derive(Debug, Clone, Object)]
pub struct OrderSnapshot {
    #[oai(flatten)]
    pub order: Order,
    /// The order's `ETag` at this version.
    pub etag: String,
}

/// A service as `GET /services/{id}` showed it, with its `ETag`.
#[derive(Debug, Clone, Object)]
pub struct ServiceSnapshot {
    #[oai(flatten)]
    pub service: Service,
    /// The service's `ETag` at this version.
    pub etag: String,
}

/// The fields every event has, then `data`: one struct per event type, so that each type has
/// its own schema under the discriminator.
macro_rules! event_types {
    ($($(#[$doc:meta])* $name:ident => $data:ty;)+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Object)]
            pub struct $name {
                /// Opaque and unique; pass it as `after` to read on from just after this event.
                pub id: String,
                /// When the change was made (UTC, milliseconds).
                pub occurred_at: Timestamp,
                /// The name of the API key that made the change.
                pub actor: String,
                pub subject: Subject,
                pub data: $data,
            }
        )+
    };
}

event_types! {
    /// An order was created; `data` is the new order.
    OrderCreatedEvent => OrderSnapshot;
    /// An order was replaced; `data` is the order after the change.
    OrderUpdatedEvent => OrderSnapshot;
    /// An order was deleted; `data` is the order just before it.
    OrderDeletedEvent => OrderSnapshot;
    /// A service was created; `data` is the new service.
    ServiceCreatedEvent => ServiceSnapshot;
    /// A service was renamed; `data` is the service after the change. The orders that book it
    /// show its new name from now on, without events of their own.
    ServiceUpdatedEvent => ServiceSnapshot;
    /// A service was deleted; `data` is the service just before it.
    ServiceDeletedEvent => ServiceSnapshot;
}

/// One committed change, told apart by `type`.
#[derive(Debug, Clone, Union)]
#[oai(discriminator_name = "type")]
pub enum Event {
    #[oai(mapping = "order.created")]
    OrderCreated(OrderCreatedEvent),
    #[oai(mapping = "order.updated")]
    OrderUpdated(OrderUpdatedEvent),
    #[oai(mapping = "order.deleted")]
    OrderDeleted(OrderDeletedEvent),
    #[oai(mapping = "service.created")]
    ServiceCreated(ServiceCreatedEvent),
    #[oai(mapping = "service.updated")]
    ServiceUpdated(ServiceUpdatedEvent),
    #[oai(mapping = "service.deleted")]
    ServiceDeleted(ServiceDeletedEvent),
}

/// A page of the feed.
#[derive(Debug, Clone, Object)]
pub struct EventPage {
    /// In commit order; empty when nothing (more) has happened.
    pub events: Vec<Event>,
    /// Pass as `after` to read on from here. Always present: keep it, and resume with it.
    pub next_cursor: String,
}

#[derive(ApiResponse)]
enum EventsRead {
    /// Events after the cursor, and the cursor to read on from.
    #[oai(status = 200)]
    Ok(Json<EventPage>),
}

operation_codes! {
    ReadErrors = [
        Unauthenticated, Forbidden, RateLimited, InvalidParameter, Internal, DatabaseUnavailable,
        DatabaseTimeout, Overloaded,
    ];
}

/// The change feed's operation. It holds no state: it is handed the [`AppState`] by poem.
pub struct EventsApi;

#[OpenApi(tag = "ApiTags::Events")]
impl EventsApi {
    /// Read the change feed
    ///
    /// Every committed change of an order or a service, once, in commit order: a change
    /// appears only once every change committed before it has, so a cursor never skips one.
    /// Start without `after` (the oldest event kept) or with `after=now` (only what comes
    /// next), then pass each answer's `next_cursor` as `after`. A renamed service is one
    /// `service.updated` event: apply its new name to the copies of the orders that book it.
    #[oai(path = "/events", method = "get", operation_id = "event_list")]
    async fn event_list(
        &self,
        _caller: ApiKey,
        state: Data<&AppState>,
        /// `next_cursor` from a previous answer (or an event's `id`), or `now`. Opaque.
        after: Query<Option<String>>,
        /// How many events at most: 1 to 1000 (larger values are capped at 1000). Default 100.
        limit: Query<Option<PageSize>>,
    ) -> Result<EventsRead, OperationError<ReadErrors>> {
        let start = match after.0.as_deref() {
            None => FeedStart::Oldest,
            Some("now") => FeedStart::Now,
            Some(cursor) => FeedStart::After(decode_cursor(cursor)?),
        };
        let limit = pagination::page_size(limit.0);
        let page = app::events::read(&state, start, limit)
            .await?
            .ok_or_else(unknown_cursor)?;
        Ok(EventsRead::Ok(Json(EventPage {
            events: page.events.into_iter().map(Event::from).collect(),
            next_cursor: encode_cursor(page.next),
        })))
    }
}

impl From<EventRecord> for Event {
    fn from(event: EventRecord) -> Self {
        let id = encode_cursor(event.position);
        let (occurred_at, actor) = (event.occurred_at, event.actor);
        match event.subject {
            EventSubject::Order(order) => {
                let subject = Subject {
                    kind: SubjectKind::Order,
                    id: order.id.to_string(),
                };
                let data = OrderSnapshot {
                    etag: etag(&order.revision),
                    order: Order::from(order),
                };
                macro_rules! order_event {
                    ($variant:ident, $name:ident) => {
                        Self::$variant($name {
                            id,
                            occurred_at,
                            actor,
                            subject,
                            data,
                        })
                    };
                }
                match event.kind {
                    EventType::OrderUpdated => order_event!(OrderUpdated, OrderUpdatedEvent),
                    EventType::OrderDeleted => order_event!(OrderDeleted, OrderDeletedEvent),
                    _ => order_event!(OrderCreated, OrderCreatedEvent),
                }
            }
            EventSubject::Service(service) => {
                let subject = Subject {
                    kind: SubjectKind::Service,
                    id: service.id.to_string(),
                };
                let data = ServiceSnapshot {
                    etag: etag(&service.version),
                    service: Service::from(service),
                };
                macro_rules! service_event {
                    ($variant:ident, $name:ident) => {
                        Self::$variant($name {
                            id,
                            occurred_at,
                            actor,
                            subject,
                            data,
                        })
                    };
                }
                match event.kind {
                    EventType::ServiceUpdated => {
                        service_event!(ServiceUpdated, ServiceUpdatedEvent)
                    }
                    EventType::ServiceDeleted => {
                        service_event!(ServiceDeleted, ServiceDeletedEvent)
                    }
                    _ => service_event!(ServiceCreated, ServiceCreatedEvent),
                }
            }
        }
    }
}

fn encode_cursor(position: FeedPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("e1:{}:{}", position.tx, position.id))
}

fn decode_cursor(cursor: &str) -> Result<FeedPosition, ApiError> {
    let text = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(unknown_cursor)?;
    let (tx, id) = text
        .strip_prefix("e1:")
        .and_then(|key| key.split_once(':'))
        .ok_or_else(unknown_cursor)?;
    match (tx.parse(), id.parse()) {
        (Ok(tx), Ok(id)) if tx >= 0 && id >= 0 => Ok(FeedPosition { tx, id }),
        _ => Err(unknown_cursor()),
    }
}

fn unknown_cursor() -> ApiError {
    ApiError::with_detail(
        ErrorCode::InvalidParameter,
        "after: is not a cursor this API issued; pass `next_cursor` from a previous answer \
         unchanged, or `now`"
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_tokens_are_refused() {
        let position = FeedPosition { tx: 7_412, id: 93 };
        assert_eq!(decode_cursor(&encode_cursor(position)).unwrap(), position);
        let order_token = URL_SAFE_NO_PAD.encode("o1:1:2");
        for token in ["", "now!", "%%%", order_token.as_str(), "ZTE6LTE6Mg"] {
            assert!(decode_cursor(token).is_err(), "{token:?} was accepted");
        }
    }
}
