//! Answers as JSON, written by serde from the very types the spec documents.
//!
//! poem-openapi's `Json<T>` turns `T` into a tree of `serde_json::Value`s (a map per object, a
//! string per field) and then writes the tree out; for a page of orders or events that was
//! most of the request's CPU. A [`JsonBody`] is written by serde_json straight from `T`'s
//! derived `Serialize`, with no tree between, and documents itself in the spec with `T`'s
//! schema, derived from the same struct: a field is added once, and the spec, its examples
//! and the wire agree (a test checks every documented type writes as poem-openapi would).

use std::{borrow::Cow, marker::PhantomData};

use poem::{IntoResponse, Response, http::HeaderValue};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::{ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON body, already written, documented as the schema of `Schema`.
pub struct JsonBody<Schema> {
    text: Vec<u8>,
    schema: PhantomData<fn() -> Schema>,
}

impl<Schema: Serialize> JsonBody<Schema> {
    /// The body of `value`, as serde writes it.
    pub fn new(value: &Schema) -> Self {
        Self::from_text(to_json(value))
    }
}

impl<Schema> JsonBody<Schema> {
    /// A body written before, such as a kept answer.
    pub fn from_text(text: Vec<u8>) -> Self {
        Self {
            text,
            schema: PhantomData,
        }
    }
}

/// `value` as compact JSON.
pub fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("the API's types always serialise")
}

/// The media type of JSON answers (what poem-openapi's `Json` answers with); the published
/// spec shows it without the parameter.
pub const JSON_MEDIA_TYPE: &str = "application/json; charset=utf-8";

impl<Schema: Type> Payload for JsonBody<Schema> {
    const CONTENT_TYPE: &'static str = JSON_MEDIA_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        Schema::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Schema::register(registry);
    }
}

impl<Schema: Send> IntoResponse for JsonBody<Schema> {
    fn into_response(self) -> Response {
        let mut response = Response::from(self.text);
        response.headers_mut().insert(
            poem::http::header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_MEDIA_TYPE),
        );
        response
    }
}

/// A list whose items were written one by one as they were read (see [`ListWriter`]), so that
/// a large page is never in memory but as its text; documented, and written, as a list of `T`.
pub struct Listed<T> {
    text: Box<RawValue>,
    items: PhantomData<fn() -> T>,
}

/// Writes a [`Listed`] an item at a time.
pub struct ListWriter<T> {
    /// `[`, then the items written so far, separated by commas.
    text: Vec<u8>,
    items: PhantomData<fn() -> T>,
}

impl<T: Serialize> ListWriter<T> {
    pub fn new() -> Self {
        Self {
            text: vec![b'['],
            items: PhantomData,
        }
    }

    /// Writes `item` at the end of the list.
    pub fn push(&mut self, item: &T) {
        if self.text.len() > 1 {
            self.text.push(b',');
        }
        serde_json::to_writer(&mut self.text, item).expect("the API's types always serialise");
    }

    pub fn finish(mut self) -> Listed<T> {
        self.text.push(b']');
        // SAFETY: serde_json writes UTF-8, and so the text is: `[`, the items as serde_json
        // wrote them joined by commas, and `]`, one well-formed JSON value with no white
        // space around it, as a raw value must be.
        let text =
            unsafe { RawValue::from_string_unchecked(String::from_utf8_unchecked(self.text)) };
        Listed {
            text,
            items: PhantomData,
        }
    }
}

impl<T: Serialize> Default for ListWriter<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize> FromIterator<T> for Listed<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut writer = ListWriter::new();
        items.into_iter().for_each(|item| writer.push(&item));
        writer.finish()
    }
}

impl<T> Serialize for Listed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

impl<T: Type> Type for Listed<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        Vec::<T>::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        Vec::<T>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Vec::<T>::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

/// For the spec's examples.
impl<T: Type + Serialize> ToJSON for Listed<T> {
    fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}

impl<T: Type + Serialize + ParseFromJSON> ParseFromJSON for Listed<T> {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        let items =
            Vec::<T>::parse_from_json(value).map_err(poem_openapi::types::ParseError::propagate)?;
        Ok(items.into_iter().collect())
    }
}

/// Every documented type is written by serde exactly as poem-openapi's `Json` writes it, for
/// any record: the spec's schemas and examples describe what is sent.
#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use poem_openapi::types::ToJSON;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use crate::domain::{
        BookedService, EventRecord, EventSubject, EventType, FeedPosition, FreeSlot, Money,
        OrderId, OrderRecord, OrderRevision, ServiceId, ServiceRecord, Timestamp,
    };
    use crate::http::{events, free_slots, orders, problem, services};

    fn ours(value: &impl serde::Serialize) -> String {
        String::from_utf8(super::to_json(value)).unwrap()
    }

    fn as_poem_openapi_writes(value: impl ToJSON) -> String {
        serde_json::to_string(&value.to_json().unwrap()).unwrap()
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        // Years 0001 to 9999, to the millisecond.
        (-62_135_596_800_000i64..253_402_300_799_999).prop_map(|millis| {
            Timestamp::from_utc(DateTime::from_timestamp_millis(millis).unwrap()).unwrap()
        })
    }

    fn money() -> impl Strategy<Value = Money> {
        (0i64..=100_000_000_000, 0u32..=2).prop_map(|(units, scale)| {
            let cents = units / 10i64.pow(2 - scale);
            Money::from_decimal(Decimal::new(cents, scale)).unwrap()
        })
    }

    /// Names and key names of any text, quotes, backslashes and control characters included.
    fn text_value() -> impl Strategy<Value = String> {
        prop_oneof!["\\PC{0,12}", "[\\x00-\\x7f]{0,12}"]
    }

    fn order() -> impl Strategy<Value = OrderRecord> {
        let services = proptest::collection::vec((1i64..i64::MAX, text_value(), 1i64..100), 0..4);
        (
            (1i64..i64::MAX, timestamp(), money(), services),
            (
                timestamp(),
                timestamp(),
                text_value(),
                text_value(),
                1i64..100,
            ),
        )
            .prop_map(
                |((id, at, fee, services), (created, updated, by, last_by, version))| {
                    let services: Vec<BookedService> = services
                        .into_iter()
                        .map(|(id, name, version)| BookedService {
                            id: ServiceId::from_db(id),
                            name,
                            version,
                        })
                        .collect();
                    OrderRecord {
                        id: OrderId::from_db(id),
                        scheduled_at: at,
                        total_fee: fee,
                        revision: OrderRevision {
                            order: version,
                            services: services.iter().map(|service| service.version).sum(),
                        },
                        services,
                        created_at: created,
                        updated_at: updated,
                        created_by: by,
                        updated_by: last_by,
                    }
                },
            )
    }

    fn service() -> impl Strategy<Value = ServiceRecord> {
        (
            (1i64..i64::MAX, text_value(), 1i64..100),
            (timestamp(), timestamp(), text_value(), text_value()),
        )
            .prop_map(
                |((id, name, version), (created_at, updated_at, created_by, updated_by))| {
                    ServiceRecord {
                        id: ServiceId::from_db(id),
                        name,
                        version,
                        created_at,
                        updated_at,
                        created_by,
                        updated_by,
                    }
                },
            )
    }

    fn event() -> impl Strategy<Value = EventRecord> {
        let subject = prop_oneof![
            (order(), 0..3usize).prop_map(|(order, kind)| (
                [
                    EventType::OrderCreated,
                    EventType::OrderUpdated,
                    EventType::OrderDeleted
                ][kind],
                EventSubject::Order(order)
            )),
            (service(), 0..3usize).prop_map(|(service, kind)| (
                [
                    EventType::ServiceCreated,
                    EventType::ServiceUpdated,
                    EventType::ServiceDeleted
                ][kind],
                EventSubject::Service(service)
            )),
        ];
        (
            0i64..i64::MAX,
            0i64..i64::MAX,
            timestamp(),
            text_value(),
            subject,
        )
            .prop_map(
                |(tx, id, occurred_at, actor, (kind, subject))| EventRecord {
                    position: FeedPosition { tx, id },
                    kind,
                    occurred_at,
                    actor,
                    subject,
                },
            )
    }

    proptest! {
        #[test]
        fn an_order_and_a_page_of_them(records in proptest::collection::vec(order(), 0..4), token in proptest::option::of("[a-zA-Z0-9_-]{1,20}")) {
            for record in &records {
                let order = orders::Order::from(record.clone());
                prop_assert_eq!(ours(&order), as_poem_openapi_writes(order));
            }
            let page = orders::OrderPage {
                orders: records.iter().cloned().map(orders::Order::from).collect(),
                next_page_token: token,
            };
            prop_assert_eq!(ours(&page), as_poem_openapi_writes(page));
        }

        #[test]
        fn a_service_and_a_page_of_them(records in proptest::collection::vec(service(), 0..4), token in proptest::option::of("[a-zA-Z0-9_-]{1,20}")) {
            for record in &records {
                let service = services::Service::from(record.clone());
                prop_assert_eq!(ours(&service), as_poem_openapi_writes(service));
            }
            let page = services::ServicePage {
                services: records.iter().cloned().map(Into::into).collect(),
                next_page_token: token,
            };
            prop_assert_eq!(ours(&page), as_poem_openapi_writes(page));
        }

        #[test]
        fn an_event_of_every_type(record in event()) {
            let event = events::Event::from(record);
            prop_assert_eq!(ours(&event), as_poem_openapi_writes(event));
        }

        #[test]
        fn free_slots(slots in proptest::collection::vec((timestamp(), timestamp()), 0..4)) {
            let slots: Vec<FreeSlot> = slots.into_iter().map(|(start, end)| FreeSlot { start, end }).collect();
            let list = free_slots::FreeSlotList {
                free_slots: slots.into_iter().map(Into::into).collect(),
            };
            prop_assert_eq!(ours(&list), as_poem_openapi_writes(list));
        }

        #[test]
        fn a_problem(detail in text_value(), request_id in text_value(), conflicting in proptest::option::of(1i64..i64::MAX), unknown in proptest::option::of(proptest::collection::vec(text_value(), 0..3))) {
            let mut error = problem::ApiError::order_time_conflict(conflicting.map(OrderId::from_db));
            if let Some(ids) = unknown.clone() {
                error = problem::ApiError::unknown_services(ids);
            }
            let mut problem = error.to_problem(request_id);
            problem.detail = detail;
            prop_assert_eq!(ours(&problem), as_poem_openapi_writes(problem));
        }
    }
}
