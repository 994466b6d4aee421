//! Requests that two readers could read differently are refused, not guessed at.
//!
//! A proxy, a WAF or a log pipeline in front of the service reads the same request the service
//! does; where the formats leave a choice (which of two equal keys wins, which of two equal
//! query parameters), they may choose differently from us, and a request checked by one
//! could do something else here. So a body with a key twice, a query with a parameter twice,
//! and a body in an encoding or character set we do not read are refused.

use std::collections::HashSet;

use poem::{Endpoint, IntoResponse, Request, Response};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::{Stage, answer};
use crate::http::{
    problem::{ApiError, ErrorCode},
    routes::MatchedRoute,
};

/// Refuses a request another reader could read differently: a query parameter given twice, or
/// a body (read whole by the body limit before this) with a key twice.
#[derive(Clone)]
pub struct RefuseAmbiguity;

impl Stage for RefuseAmbiguity {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        // Only an operation that reads a query has one to misread: the others (the probes,
        // the metrics) ignore whatever follows their path.
        let reads_query = request
            .extensions()
            .get::<MatchedRoute>()
            .and_then(|matched| matched.0.as_ref())
            .is_some_and(|route| route.reads_query(request.method()));
        if reads_query && let Some(name) = request.uri().query().and_then(repeated_query_parameter)
        {
            return repeated_parameter_error(&name).into_response();
        }
        if !MatchedRoute::reads_body(&request) {
            return answer(next, request).await;
        }
        // In memory already (see the body limit): reading it cannot fail.
        let body = match request.take_body().into_bytes().await {
            Ok(body) => body,
            Err(error) => return poem::Error::from(error).into_response(),
        };
        if !body.is_empty()
            && let Some(path) = duplicate_json_key(&body)
        {
            return duplicate_key_error(&path).into_response();
        }
        request.set_body(body);
        answer(next, request).await
    }
}

/// The first query parameter given more than once, if any.
pub fn repeated_query_parameter(query: &str) -> Option<String> {
    let mut seen = HashSet::new();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .map(percent_decoded)
        .find(|name| !seen.insert(name.clone()))
}

/// `name` with `+` and `%XX` decoded, as a form decoder reads it, so that `page%5Fsize` and
/// `page_size` are one name (bytes that are not UTF-8 are replaced, which only makes names more
/// alike, never less).
fn percent_decoded(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escaped) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
                continue;
            }
            (b'+', _) => decoded.push(b' '),
            (byte, _) => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The 400 for a repeated query parameter.
pub fn repeated_parameter_error(name: &str) -> ApiError {
    ApiError::with_detail(
        ErrorCode::InvalidParameter,
        format!("{name}: given more than once; send each query parameter once"),
    )
}

/// Why a body's declared encoding or character set cannot be read, if it cannot: only
/// unencoded (`identity`) UTF-8 is.
pub fn unreadable_encoding(
    content_encoding: Option<&str>,
    content_type: Option<&str>,
) -> Option<ApiError> {
    if let Some(encoding) = content_encoding.map(str::trim)
        && !encoding.is_empty()
        && !encoding.eq_ignore_ascii_case("identity")
    {
        return Some(ApiError::with_detail(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Encoding {encoding} is not accepted; send the body uncompressed"),
        ));
    }
    let charset = content_type?
        .split(';')
        .skip(1)
        .filter_map(|parameter| parameter.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"'))?;
    (!charset.eq_ignore_ascii_case("utf-8")).then(|| {
        ApiError::with_detail(
            ErrorCode::UnsupportedMediaType,
            format!("charset={charset} is not accepted; the body must be UTF-8 JSON"),
        )
    })
}

/// Where a JSON document has an object with a key twice, as `path.key`, if it has one and is
/// JSON at all. (Whether it is JSON is the parser's to report, with its own message.)
///
/// Linear in the document's size: the walk keeps the path as a stack of segments and writes
/// it out only for the key it reports.
pub fn duplicate_json_key(body: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut path = Vec::new();
    let mut duplicate = None;
    let walked = Walk {
        path: &mut path,
        duplicate: &mut duplicate,
    }
    .deserialize(&mut deserializer);
    walked.err().and(duplicate)
}

/// One step of the way from a document's root to a value.
enum Segment<'de> {
    Key(std::borrow::Cow<'de, str>),
    Index(usize),
}

/// `segments` as error details write a field's place: `services[0].id`.
fn written_path(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) if path.is_empty() => path.push_str(key),
            Segment::Key(key) => {
                path.push('.');
                path.push_str(key);
            }
            Segment::Index(index) => {
                path.push('[');
                path.push_str(itoa::Buffer::new().format(*index));
                path.push(']');
            }
        }
    }
    path
}

/// Visits every value of a document, failing at the first object that repeats a key and
/// leaving that key's path in `duplicate`.
struct Walk<'a, 'de> {
    /// Where the value being visited is.
    path: &'a mut Vec<Segment<'de>>,
    duplicate: &'a mut Option<String>,
}

impl<'a, 'de> Walk<'a, 'de> {
    /// The walk of a value one segment below this one (which `path` holds on top).
    fn below(&mut self) -> Walk<'_, 'de> {
        Walk {
            path: self.path,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
        self.path.push(Segment::Index(0));
        let mut index = 0;
        while items.next_element_seed(self.below())?.is_some() {
            index += 1;
            *self.path.last_mut().expect("pushed above") = Segment::Index(index);
        }
        self.path.pop();
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut members: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(Key(key)) = members.next_key()? {
            if !seen.insert(key.clone()) {
                self.path.push(Segment::Key(key));
                *self.duplicate = Some(written_path(self.path));
                return Err(de::Error::custom("a key appears twice"));
            }
            self.path.push(Segment::Key(key));
            members.next_value_seed(self.below())?;
            self.path.pop();
        }
        Ok(())
    }
}

/// An object's key, borrowed from the document where it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(key.into()))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(key.to_owned().into()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The 400 for a body with a key twice at `path`.
pub fn duplicate_key_error(path: &str) -> ApiError {
    ApiError::with_detail(
        ErrorCode::InvalidBody,
        format!("{path}: appears more than once; send each field once"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_twice_anywhere_is_found_with_its_path() {
        let duplicate = |text: &str| duplicate_json_key(text.as_bytes());
        assert_eq!(
            duplicate(r#"{"totalfee": 1, "totalfee": 2}"#).as_deref(),
            Some("totalfee")
        );
        assert_eq!(
            duplicate(r#"{"services": [{"id": "1"}, {"id": "2", "id": "3"}]}"#).as_deref(),
            Some("services[1].id")
        );
        assert_eq!(
            duplicate(r#"{"a": {"b": 1, "b": 1}}"#).as_deref(),
            Some("a.b")
        );
        assert_eq!(duplicate(r#"{"totalfee": 100.5, "services": []}"#), None);
        assert_eq!(
            duplicate(r#"{"a": 1, "b": {"a": 1}}"#),
            None,
            "other objects"
        );
        assert_eq!(duplicate("not json"), None, "the parser's to report");
    }

    #[test]
    fn a_query_parameter_twice_is_found_however_it_is_spelled() {
        let repeated = repeated_query_parameter;
        assert_eq!(
            repeated("page_size=1&page_size=2").as_deref(),
            Some("page_size")
        );
        assert_eq!(repeated("from=a&to=b&from").as_deref(), Some("from"));
        assert_eq!(
            repeated("page_size=1&page%5Fsize=2").as_deref(),
            Some("page_size")
        );
        assert_eq!(repeated("page_size=1&page_token=x"), None);
        assert_eq!(repeated(""), None);
    }

    #[test]
    fn only_unencoded_utf8_bodies_are_read() {
        assert!(unreadable_encoding(None, Some("application/json")).is_none());
        assert!(
            unreadable_encoding(Some("identity"), Some("application/json; charset=UTF-8"))
                .is_none()
        );
        assert!(unreadable_encoding(None, Some("application/json; charset=\"utf-8\"")).is_none());
        assert!(unreadable_encoding(Some("gzip"), Some("application/json")).is_some());
        assert!(unreadable_encoding(None, Some("application/json; charset=latin1")).is_some());
    }
}
