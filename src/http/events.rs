//! `/events`: the change feed, every committed change of an order or a service in commit
//! order, for systems that keep copies or react to changes.
//!
//! An event's `data` is the record exactly as `GET` showed it right after the change (just
//! before it, for a delete), with its `etag`. The feed's cursor is opaque: the URL-safe base64
//! of the position after an event, prefixed with a version.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi, Union,
    param::Query,
    registry::MetaSchema,
    types::{ParseError, ParseFromParameter, ParseResult},
};
use serde::Serialize;
use serde_json::Value;

use super::{
    ApiTags,
    auth::ApiKey,
    conditional::etag,
    json_body::JsonBody,
    orders::Order,
    pagination::{self, PageSize},
    pipeline::in_flight::Place,
    problem::{
        ApiError,
        documentation::{OperationError, operation_codes},
    },
    services::Service,
    value_types::impl_scalar_type,
};
use crate::{
    app::{self, AppState, events::MAX_WAIT, waiting_readers::ConnectionId},
    domain::{EventRecord, EventSubject, EventType, FeedPosition, FeedStart, Timestamp},
};

/// What an event is about.
#[derive(Debug, Clone, Object, Serialize)]
pub struct Subject {
    /// Whether the event is about an order or a service.
    pub kind: SubjectKind,
    /// The order's or the service's id.
    pub id: String,
}

/// The kind of record an event is about.
#[derive(Debug, Clone, Copy, Enum, Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    Order,
    Service,
}

/// An order as `GET /orders/{id}` showed it, with its `ETag`.
#[derive(Debug, Clone, Object, Serialize)]
pub struct OrderSnapshot {
    #[oai(flatten)]
    #[serde(flatten)]
    pub order: Order,
    /// The order's `ETag` at this version.
    pub etag: String,
}

/// A service as `GET /services/{id}` showed it, with its `ETag`.
#[derive(Debug, Clone, Object, Serialize)]
pub struct ServiceSnapshot {
    #[oai(flatten)]
    #[serde(flatten)]
    pub service: Service,
    /// The service's `ETag` at this version.
    pub etag: String,
}

/// The fields every event has, then `data`: one struct per event type, each with a `type` of
/// one value, so that each type has its own schema and generators tell them apart by `type`
/// (the published spec adds the discriminator, see [`super::spec`]).
macro_rules! event_types {
    ($($(#[$doc:meta])* $name:ident($type_name:ident = $type_value:literal) => $data:ty;)+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Object, Serialize)]
            pub struct $name {
                /// Opaque and unique; pass it as `after` to read on from just after this event.
                pub id: String,
                /// What happened.
                #[oai(rename = "type")]
                #[serde(rename = "type")]
                pub kind: $type_name,
                /// When the change was made (UTC, milliseconds).
                pub occurred_at: Timestamp,
                /// The name of the API key that made the change.
                pub actor: String,
                /// The record the change was made to.
                pub subject: Subject,
                /// The record as `GET` showed it after the change (before it, for a delete),
                /// with its `etag`.
                pub data: $data,
            }

            /// The `type` of this kind of event: its one value.
            #[derive(Debug, Clone, Copy, Default, Enum, Serialize)]
            pub enum $type_name {
                #[default]
                #[oai(rename = $type_value)]
                #[serde(rename = $type_value)]
                Only,
            }
        )+
    };
}

event_types! {
    /// An order was created; `data` is the new order.
    OrderCreatedEvent(OrderCreatedType = "order.created") => OrderSnapshot;
    /// An order was replaced; `data` is the order after the change.
    OrderUpdatedEvent(OrderUpdatedType = "order.updated") => OrderSnapshot;
    /// An order was deleted; `data` is the order just before it.
    OrderDeletedEvent(OrderDeletedType = "order.deleted") => OrderSnapshot;
    /// A service was created; `data` is the new service.
    ServiceCreatedEvent(ServiceCreatedType = "service.created") => ServiceSnapshot;
    /// A service was renamed; `data` is the service after the change. The orders that book it
    /// show its new name from now on, without events of their own.
    ServiceUpdatedEvent(ServiceUpdatedType = "service.updated") => ServiceSnapshot;
    /// A service was deleted; `data` is the service just before it.
    ServiceDeletedEvent(ServiceDeletedType = "service.deleted") => ServiceSnapshot;
}

/// One committed change, told apart by `type`.
#[derive(Debug, Clone, Union, Serialize)]
#[oai(one_of)]
#[serde(untagged)]
pub enum Event {
    OrderCreated(OrderCreatedEvent),
    OrderUpdated(OrderUpdatedEvent),
    OrderDeleted(OrderDeletedEvent),
    ServiceCreated(ServiceCreatedEvent),
    ServiceUpdated(ServiceUpdatedEvent),
    ServiceDeleted(ServiceDeletedEvent),
}

/// A page of the feed.
#[derive(Debug, Clone, Object, Serialize)]
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
    Ok(JsonBody<EventPage>),
}

operation_codes! {
    ReadErrors = [
        Unauthenticated, Forbidden, RateLimited, InvalidParameter, CursorExpired, Internal,
        DatabaseUnavailable, DatabaseTimeout, Overloaded,
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
    /// next), then pass each answer's `next_cursor` as `after`; with `wait`, an answer with
    /// no events comes when that time is up, or sooner: at once when the instance already
    /// holds as many waiting readers as it may (of the caller's key, or in all), or when it
    /// needs the connection for another client or shuts down. Each is a correct answer: ask
    /// again, after a pause of a second if it came at once. A
    /// renamed service is one `service.updated` event: apply its new name to the copies of the
    /// orders that book it. Events are kept for a retention period (7 days by default): a
    /// cursor from before it is 410 `CURSOR_EXPIRED`, and the consumer re-reads the current
    /// state and resumes with `after=now`.
    #[oai(path = "/events", method = "get", operation_id = "event_list")]
    async fn event_list(
        &self,
        caller: ApiKey,
        state: Data<&AppState>,
        request: &poem::Request,
        /// `next_cursor` from a previous answer (or an event's `id`), or `now`. Opaque.
        after: Query<Option<String>>,
        /// How many events at most: 1 to 1000 (larger values are capped at 1000). Default 100.
        limit: Query<Option<PageSize>>,
        /// Seconds to wait, when there is no event yet, for one to arrive: 0 to 30. Default 0
        /// (answer at once). The answer comes as soon as an event does (within about 100 ms),
        /// else with no events and the same cursor when the time is up (or sooner, see above).
        wait: Query<Option<WaitSeconds>>,
    ) -> Result<EventsRead, OperationError<ReadErrors>> {
        let start = match after.0.as_deref() {
            None => FeedStart::Oldest,
            Some("now") => FeedStart::Now,
            Some(cursor) => FeedStart::After(decode_cursor(cursor)?),
        };
        let limit = pagination::page_size(limit.0);
        let wait = wait.0.map_or(Duration::ZERO, |WaitSeconds(seconds)| {
            Duration::from_secs(seconds.into())
        });
        // A wait holds nothing: its place under the in-flight cap goes while it sleeps.
        let place = request
            .extensions()
            .get::<Place>()
            .cloned()
            .unwrap_or_default();
        let connection = request.extensions().get::<ConnectionId>().copied();
        let page =
            app::events::read_waiting(&state, &caller.0, start, limit, wait, connection, || {
                place.give_up()
            })
            .await?;
        Ok(EventsRead::Ok(JsonBody::new(&EventPage {
            next_cursor: encode_cursor(page.next),
            events: page.events.into_iter().map(Event::from).collect(),
        })))
    }
}

/// Builds an `Event::$variant` (a `$name`) from the fields every event has (`$common`: its id,
/// time and actor) and its subject and data.
macro_rules! event_of {
    ($variant:ident($name:ident), $common:expr, $subject:expr, $data:expr) => {{
        let (id, occurred_at, actor) = $common;
        Event::$variant($name {
            id,
            kind: Default::default(),
            occurred_at,
            actor,
            subject: $subject,
            data: $data,
        })
    }};
}

/// An event record as the API shows it: the object of its type's schema.
impl From<EventRecord> for Event {
    fn from(event: EventRecord) -> Self {
        let EventRecord {
            position,
            kind,
            occurred_at,
            actor,
            subject,
        } = event;
        let common = (encode_cursor(position), occurred_at, actor);
        match subject {
            EventSubject::Order(order) => {
                let subject = Subject {
                    kind: SubjectKind::Order,
                    id: order.id.to_string(),
                };
                let data = OrderSnapshot {
                    etag: etag(&order.revision),
                    order: Order::from(order),
                };
                match kind {
                    EventType::OrderUpdated => {
                        event_of!(OrderUpdated(OrderUpdatedEvent), common, subject, data)
                    }
                    EventType::OrderDeleted => {
                        event_of!(OrderDeleted(OrderDeletedEvent), common, subject, data)
                    }
                    _ => event_of!(OrderCreated(OrderCreatedEvent), common, subject, data),
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
                match kind {
                    EventType::ServiceUpdated => {
                        event_of!(ServiceUpdated(ServiceUpdatedEvent), common, subject, data)
                    }
                    EventType::ServiceDeleted => {
                        event_of!(ServiceDeleted(ServiceDeletedEvent), common, subject, data)
                    }
                    _ => event_of!(ServiceCreated(ServiceCreatedEvent), common, subject, data),
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
        .ok_or_else(ApiError::unknown_cursor)?;
    let (tx, id) = text
        .strip_prefix("e1:")
        .and_then(|key| key.split_once(':'))
        .ok_or_else(ApiError::unknown_cursor)?;
    match (tx.parse(), id.parse()) {
        (Ok(tx), Ok(id)) if tx >= 0 && id >= 0 => Ok(FeedPosition { tx, id }),
        _ => Err(ApiError::unknown_cursor()),
    }
}

/// How long a reader asks to wait for events, in whole seconds: 0 to [`MAX_WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitSeconds(pub u8);

impl WaitSeconds {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const REFUSAL: &str = "must be a whole number of seconds from 0 to 30";
        const _: () = assert!(MAX_WAIT.as_secs() == 30, "the refusal names the maximum");
        match text.parse::<u8>() {
            Ok(seconds) if u64::from(seconds) <= MAX_WAIT.as_secs() => Ok(Self(seconds)),
            _ => Err(REFUSAL),
        }
    }
}

impl_scalar_type!(
    WaitSeconds,
    "WaitSeconds",
    MetaSchema {
        minimum: Some(0.0),
        maximum: Some(MAX_WAIT.as_secs() as f64),
        default: Some(Value::from(0)),
        ..MetaSchema::new_with_format("integer", "int32")
    }
);

impl ParseFromParameter for WaitSeconds {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        WaitSeconds::parse(value).map_err(ParseError::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_whole_seconds_up_to_thirty() {
        assert_eq!(WaitSeconds::parse("0"), Ok(WaitSeconds(0)));
        assert_eq!(WaitSeconds::parse("30"), Ok(WaitSeconds(30)));
        for refused in ["31", "-1", "1.5", "", "256", "ten"] {
            assert!(WaitSeconds::parse(refused).is_err(), "{refused:?}");
        }
    }

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
