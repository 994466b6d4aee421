//! Answers whose JSON is written straight from the records they show.
//!
//! poem-openapi's `Json<T>` turns `T` into a tree of `serde_json::Value`s (a map per object,
//! a string per field) and then writes the tree out; for a page of orders or events that was
//! most of the request's CPU. A [`JsonBody`] is written once, field by field, by a function
//! here, and documents itself in the spec with the schema of the object type it stands for.
//! Each writer is tested to give the very bytes that `Json` of that type gives (see the
//! tests), so the spec, the examples and the wire cannot drift apart.

use std::{fmt, io::Write as _, marker::PhantomData};

use poem::{IntoResponse, Response, http::HeaderValue};

use crate::domain::Timestamp;
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

/// A JSON body, already written, documented as the schema of `Schema`.
pub struct JsonBody<Schema> {
    text: Vec<u8>,
    schema: PhantomData<fn() -> Schema>,
}

impl<Schema> JsonBody<Schema> {
    /// The body that `write` writes.
    pub fn write(write: impl FnOnce(&mut JsonWriter)) -> Self {
        Self::from_text(JsonWriter::text_of(write))
    }

    /// A body written before, such as a kept answer.
    pub fn from_text(text: Vec<u8>) -> Self {
        Self {
            text,
            schema: PhantomData,
        }
    }

    pub fn text(&self) -> &[u8] {
        &self.text
    }
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

/// Writes compact JSON as `serde_json` does: members in the order written, no white space,
/// strings escaped as `serde_json` escapes them.
#[derive(Default)]
pub struct JsonWriter {
    text: Vec<u8>,
    /// Whether the next member or element follows another in its object or array.
    after_value: bool,
}

impl JsonWriter {
    pub fn into_text(self) -> Vec<u8> {
        self.text
    }

    /// The text that `write` writes.
    pub fn text_of(write: impl FnOnce(&mut JsonWriter)) -> Vec<u8> {
        let mut writer = JsonWriter::default();
        write(&mut writer);
        writer.text
    }

    /// Before a value (or a member's name): the comma that separates it from the one before.
    fn separate(&mut self) {
        if self.after_value {
            self.text.push(b',');
        }
    }

    pub fn begin_object(&mut self) -> &mut Self {
        self.separate();
        self.text.push(b'{');
        self.after_value = false;
        self
    }

    pub fn end_object(&mut self) -> &mut Self {
        self.text.push(b'}');
        self.after_value = true;
        self
    }

    pub fn begin_array(&mut self) -> &mut Self {
        self.separate();
        self.text.push(b'[');
        self.after_value = false;
        self
    }

    pub fn end_array(&mut self) -> &mut Self {
        self.text.push(b']');
        self.after_value = true;
        self
    }

    /// A member's name; its value comes next. Names are this API's own, plain ASCII.
    pub fn key(&mut self, name: &'static str) -> &mut Self {
        debug_assert!(
            !name
                .bytes()
                .any(|byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        );
        self.separate();
        self.text.push(b'"');
        self.text.extend_from_slice(name.as_bytes());
        self.text.extend_from_slice(b"\":");
        self.after_value = false;
        self
    }

    pub fn string(&mut self, value: &str) -> &mut Self {
        self.separate();
        self.text.push(b'"');
        escape_into(&mut self.text, value);
        self.text.push(b'"');
        self.after_value = true;
        self
    }

    /// An instant, as the API writes them (see [`Timestamp`]).
    pub fn timestamp(&mut self, value: Timestamp) -> &mut Self {
        self.separate();
        self.text.push(b'"');
        self.text.extend_from_slice(&value.rfc3339());
        self.text.push(b'"');
        self.after_value = true;
        self
    }

    /// An integer written as a string, as the API writes ids.
    pub fn integer_string(&mut self, value: i64) -> &mut Self {
        self.separate();
        self.text.push(b'"');
        self.text
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.text.push(b'"');
        self.after_value = true;
        self
    }

    /// A number, written by `Display`: integers, and decimals such as money, whose `Display`
    /// is the exact JSON text of the number.
    pub fn number(&mut self, value: impl fmt::Display) -> &mut Self {
        self.separate();
        let _ = write!(self.text, "{value}");
        self.after_value = true;
        self
    }

    /// `value` as a string when present; nothing at all (not even the member) when absent.
    pub fn optional_string(&mut self, name: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.key(name).string(value);
        }
        self
    }
}

/// What `serde_json` escapes in a string: the quote, the backslash and control characters,
/// with the short forms it uses for the common ones.
fn escape_into(text: &mut Vec<u8>, value: &str) {
    let mut plain_from = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        text.extend_from_slice(&value.as_bytes()[plain_from..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            text.extend_from_slice(b"\\u00");
            text.push(HEX[usize::from(byte >> 4)]);
            text.push(HEX[usize::from(byte & 0xf)]);
        } else {
            text.extend_from_slice(escape);
        }
        plain_from = at + 1;
    }
    text.extend_from_slice(&value.as_bytes()[plain_from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(write: impl FnOnce(&mut JsonWriter)) -> String {
        String::from_utf8(JsonWriter::text_of(write)).unwrap()
    }

    #[test]
    fn nested_objects_and_arrays_are_separated_as_serde_json_separates_them() {
        let text = written(|json| {
            json.begin_object();
            json.key("a").number(1);
            json.key("list").begin_array();
            for n in 0..3 {
                json.begin_object().key("n").number(n).end_object();
            }
            json.end_array();
            json.key("empty").begin_array().end_array();
            json.key("object").begin_object().end_object();
            json.optional_string("absent", None);
            json.optional_string("present", Some("yes"));
            json.end_object();
        });
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, serde_json::to_string(&value).unwrap());
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_escaped_exactly_as_serde_json_escapes_it(value in "\\PC*|[\\x00-\\x7f]*") {
            let ours = written(|json| { json.string(&value); });
            let theirs = serde_json::to_string(&value).unwrap();
            proptest::prop_assert_eq!(&ours, &theirs);
        }
    }
}

/// Every writer gives the very bytes that poem-openapi's `Json` gives for the schema's object
/// type, for any record: the spec's schemas and examples describe what is written.
#[cfg(test)]
mod writers {
    use chrono::DateTime;
    use poem_openapi::types::ToJSON;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use super::JsonWriter;
    use crate::domain::{
        BookedService, EventRecord, EventSubject, EventType, FeedPosition, FreeSlot, Money,
        OrderId, OrderRecord, OrderRevision, ServiceId, ServiceRecord, Timestamp,
    };

    fn text(write: impl FnOnce(&mut JsonWriter)) -> String {
        String::from_utf8(JsonWriter::text_of(write)).unwrap()
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
        fn an_order_and_a_page_of_them(orders in proptest::collection::vec(order(), 0..4), token in proptest::option::of("[a-zA-Z0-9_-]{1,20}")) {
            for order in &orders {
                prop_assert_eq!(
                    text(|json| crate::http::orders::write_order(json, order)),
                    as_poem_openapi_writes(crate::http::orders::Order::from(order.clone()))
                );
            }
            let page = crate::http::orders::OrderPage {
                orders: orders.iter().cloned().map(Into::into).collect(),
                next_page_token: token.clone(),
            };
            let mut writer = crate::http::orders::OrderPageWriter::new();
            orders.iter().for_each(|order| writer.order(order));
            let written = writer.finish(token.as_deref());
            prop_assert_eq!(
                String::from_utf8(written.text().to_vec()).unwrap(),
                as_poem_openapi_writes(page)
            );
        }

        #[test]
        fn a_service_and_a_page_of_them(services in proptest::collection::vec(service(), 0..4), token in proptest::option::of("[a-zA-Z0-9_-]{1,20}")) {
            for service in &services {
                prop_assert_eq!(
                    text(|json| crate::http::services::write_service(json, service)),
                    as_poem_openapi_writes(crate::http::services::Service::from(service.clone()))
                );
            }
            let page = crate::http::services::ServicePage {
                services: services.iter().cloned().map(Into::into).collect(),
                next_page_token: token.clone(),
            };
            prop_assert_eq!(
                text(|json| crate::http::services::write_service_page(json, &services, token.as_deref())),
                as_poem_openapi_writes(page)
            );
        }

        #[test]
        fn an_event_of_every_type(event in event()) {
            prop_assert_eq!(
                text(|json| crate::http::events::write_event(json, &event)),
                as_poem_openapi_writes(crate::http::events::Event::from(event.clone()))
            );
        }

        #[test]
        fn free_slots(slots in proptest::collection::vec((timestamp(), timestamp()), 0..4)) {
            let slots: Vec<FreeSlot> = slots.into_iter().map(|(start, end)| FreeSlot { start, end }).collect();
            let list = crate::http::free_slots::FreeSlotList {
                free_slots: slots.iter().cloned().map(Into::into).collect(),
            };
            prop_assert_eq!(
                text(|json| crate::http::free_slots::write_free_slots(json, &slots)),
                as_poem_openapi_writes(list)
            );
        }

        #[test]
        fn a_problem(detail in text_value(), request_id in text_value(), conflicting in proptest::option::of(1i64..i64::MAX), unknown in proptest::option::of(proptest::collection::vec(text_value(), 0..3))) {
            let mut error = crate::http::problem::ApiError::order_time_conflict(conflicting.map(OrderId::from_db));
            if let Some(ids) = unknown.clone() {
                error = crate::http::problem::ApiError::unknown_services(ids);
            }
            let mut problem = error.to_problem(request_id);
            problem.detail = detail;
            prop_assert_eq!(
                text(|json| problem.write_json(json)),
                as_poem_openapi_writes(problem.clone())
            );
        }
    }
}
