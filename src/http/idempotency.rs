//! `Idempotency-Key` as HTTP sees it: reading the header, rendering an answer to be kept,
//! and replaying a kept one. What is kept, and when, is `app::idempotency`'s to decide.

use poem::{
    IntoResponse, Response,
    http::{HeaderMap, StatusCode},
};
use poem_openapi::{
    ApiResponse,
    registry::{MetaResponses, MetaSchema, Registry},
    types::{ParseFromParameter, ParseResult},
};

use super::{
    json_body::{JSON_MEDIA_TYPE, to_json},
    problem::{ApiError, ErrorCode, REQUEST_ID},
    value_types::impl_scalar_type,
};
use crate::{
    app::{AppError, idempotency::Answer},
    domain::{IdempotencyKey, StoredAnswer},
};

/// The header's name, as the spec and the errors spell it.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The header that marks a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The header's value as the spec states it: an RFC 8941 string (`"..."`, with `\"` and
/// `\\` escapes) or a bare token, either holding 1 to 255 printable ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str =
    r#"^(?:"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x22\x5c]){1,255}"|[\x21\x23-\x7e]{1,255})$"#;

/// The `Idempotency-Key` header as an operation declares it: documented with
/// [`IDEMPOTENCY_KEY_PATTERN`], but taken as it comes. The key is read, and refused when it is
/// not one, by [`idempotency_key_in`], which says what a key must be. (poem-openapi's own
/// pattern validator compiles its regular expression anew for every request: that was three
/// fifths of an idempotent create's CPU.)
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader;

impl_scalar_type!(
    IdempotencyKeyHeader,
    "string",
    MetaSchema {
        pattern: Some(IDEMPOTENCY_KEY_PATTERN.to_owned()),
        ..MetaSchema::new("string")
    }
);

impl ParseFromParameter for IdempotencyKeyHeader {
    fn parse_from_parameter(_value: &str) -> ParseResult<Self> {
        Ok(Self)
    }
}

/// The key in an `Idempotency-Key` header, or a 400 saying what a key must be.
pub fn idempotency_key(header: Option<&str>) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let key = match value.strip_prefix('"') {
        Some(quoted) => unquote(quoted),
        None => Some(value.to_owned()).filter(|bare| !bare.contains('"') && !bare.contains(' ')),
    };
    key.as_deref()
        .and_then(IdempotencyKey::parse)
        .map(Some)
        .ok_or_else(ApiError::invalid_idempotency_key)
}

/// The key in `headers`' `Idempotency-Key`, or a 400 saying what a key must be. Read from the
/// headers themselves: the operation's header parameter drops a value that is not visible
/// ASCII as if none had been sent, and the request would be carried out without its key.
/// Two headers are refused too: a proxy that keeps the other one would see another key.
pub fn idempotency_key_in(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_idempotency_key());
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_idempotency_key())?;
    idempotency_key(Some(value))
}

/// The contents of an RFC 8941 string after its opening quote, if it is one.
fn unquote(quoted: &str) -> Option<String> {
    let mut key = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return chars.next().is_none().then_some(key),
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => key.push(escaped),
                _ => return None,
            },
            c => key.push(c),
        }
    }
    None
}

/// A create's response: the operation's own, or the first answer to the same request, replayed.
pub enum Replayable<R> {
    Fresh(R),
    Replayed(StoredAnswer),
}

impl<R> Replayable<R> {
    /// The response for `answer`, rendering a fresh record with `respond`.
    pub fn from_answer<T>(answer: Answer<T>, respond: impl FnOnce(T) -> R) -> Self {
        match answer {
            Answer::Fresh(record) => Self::Fresh(respond(record)),
            Answer::Replayed(stored) => Self::Replayed(stored),
        }
    }
}

/// Documented as the operation's own response; a replay is one of the answers documented
/// already, with `Idempotent-Replayed` added (which the published spec states).
impl<R: ApiResponse> ApiResponse for Replayable<R> {
    fn meta() -> MetaResponses {
        R::meta()
    }

    fn register(registry: &mut Registry) {
        R::register(registry);
    }
}

impl<R: IntoResponse> IntoResponse for Replayable<R> {
    fn into_response(self) -> Response {
        match self {
            Self::Fresh(response) => response.into_response(),
            Self::Replayed(answer) => {
                let mut response = Response::builder()
                    .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK))
                    .content_type(answer.content_type)
                    .header(IDEMPOTENT_REPLAYED, "true");
                if let Some(location) = answer.location {
                    response = response.header("Location", location);
                }
                if let Some(etag) = answer.etag {
                    response = response.header("ETag", etag);
                }
                response.body(answer.body)
            }
        }
    }
}

/// A record a create makes, as its 201 shows it: the body, `Location` and `ETag`.
pub trait Created: Clone {
    /// The record as the API shows it, as JSON.
    fn body(&self) -> Vec<u8>;

    fn location(&self) -> String;
    fn etag(&self) -> String;
}

/// A create's outcome as it is kept for replay: the 201 the operation gives for the record,
/// or the refusal the write decided, byte for byte as they are first sent.
pub fn render_create<R: Created>(outcome: &Result<R, AppError>) -> StoredAnswer {
    match outcome {
        Ok(record) => created_answer(record.body(), record.location(), record.etag()),
        Err(error) => refused_answer(error),
    }
}

/// How a created record's answer is kept: 201 with its JSON, `Location` and `ETag`.
fn created_answer(body: Vec<u8>, location: String, etag: String) -> StoredAnswer {
    StoredAnswer {
        status: 201,
        // What a fresh answer says, so a replay is byte for byte the first answer.
        content_type: JSON_MEDIA_TYPE.to_owned(),
        body,
        location: Some(location),
        etag: Some(etag),
    }
}

/// How a refusal the write decided is kept: its problem body, as it was first sent.
fn refused_answer(error: &AppError) -> StoredAnswer {
    let error = ApiError::from_decided(error).unwrap_or_else(|| ApiError::new(ErrorCode::Internal));
    let request_id = REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "unknown".to_owned());
    StoredAnswer {
        status: error.code().status(),
        content_type: "application/problem+json".to_owned(),
        body: to_json(&error.to_problem(request_id)),
        location: None,
        etag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(header: &str) -> Option<String> {
        idempotency_key(Some(header))
            .ok()
            .flatten()
            .map(|key| key.as_str().to_owned())
    }

    #[test]
    fn a_key_is_a_bare_token_or_a_quoted_string_and_both_mean_the_same() {
        assert_eq!(key("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(key("\"abc-123\"").as_deref(), Some("abc-123"));
        assert_eq!(
            key(r#""say \"hi\" \\ there""#).as_deref(),
            Some(r#"say "hi" \ there"#)
        );
        assert_eq!(key(&"k".repeat(255)).map(|key| key.len()), Some(255));
        assert!(idempotency_key(None).unwrap().is_none());
    }

    #[test]
    fn a_header_value_that_is_not_ascii_is_refused_not_ignored() {
        let mut headers = HeaderMap::new();
        assert!(idempotency_key_in(&headers).unwrap().is_none());
        headers.insert(
            IDEMPOTENCY_KEY,
            poem::http::HeaderValue::from_bytes("\u{e9}t\u{e9}".as_bytes()).unwrap(),
        );
        assert!(idempotency_key_in(&headers).is_err());
        headers.insert(
            IDEMPOTENCY_KEY,
            poem::http::HeaderValue::from_static("\"abc\""),
        );
        let key = idempotency_key_in(&headers).unwrap().unwrap();
        assert_eq!(key.as_str(), "abc");
    }

    #[test]
    fn anything_else_is_refused_as_the_spec_pattern_refuses_it() {
        let pattern = regex::Regex::new(IDEMPOTENCY_KEY_PATTERN).unwrap();
        let long = "k".repeat(256);
        let quoted_long = format!("\"{long}\"");
        for bad in [
            "",
            "\"\"",
            "a b",
            "\"abc",
            "abc\"",
            "\"a\"b\"",
            r#""a\b""#,
            "é",
            "\t",
            &long,
            &quoted_long,
        ] {
            assert_eq!(key(bad), None, "{bad:?}");
            assert!(!pattern.is_match(bad), "{bad:?}");
        }
        for good in ["abc-123", "\"abc 123\"", r#""q\"""#, "a\\b"] {
            assert!(key(good).is_some(), "{good:?}");
            assert!(pattern.is_match(good), "{good:?}");
        }
    }

    #[test]
    fn a_key_sent_in_two_headers_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append(IDEMPOTENCY_KEY, "first".parse().unwrap());
        assert_eq!(
            idempotency_key_in(&headers)
                .unwrap()
                .map(|key| key.as_str().to_owned()),
            Some("first".to_owned())
        );
        headers.append(IDEMPOTENCY_KEY, "second".parse().unwrap());
        assert!(idempotency_key_in(&headers).is_err());
    }
}
