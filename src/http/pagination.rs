//! Page sizes and opaque page tokens for keyset pagination.
//!
//! A token is the URL-safe base64 of the last item's sort key, prefixed with a version so the
//! format can change. Clients must treat it as opaque; anything that does not decode is 400.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::DateTime;

use poem_openapi::{
    registry::MetaSchema,
    types::{ParseError, ParseFromParameter, ParseResult},
};
use serde_json::Value;

use super::{
    problem::{ApiError, ErrorCode},
    value_types::impl_scalar_type,
};
use crate::domain::{OrderCursor, OrderId, ServiceId, Timestamp};

pub const DEFAULT_PAGE_SIZE: i64 = 100;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// A page size as a caller asks for it: at least 1. Larger than [`MAX_PAGE_SIZE`] is capped,
/// not refused, so the parameter has no maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(i64);

impl PageSize {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        match text.parse::<i64>() {
            Ok(size) if size >= 1 => Ok(Self(size)),
            Ok(_) => Err("must be at least 1"),
            Err(_) => Err("must be an integer"),
        }
    }
}

/// The page size to use: the default when absent, capped at the maximum.
pub fn page_size(requested: Option<PageSize>) -> usize {
    let PageSize(size) = requested.unwrap_or(PageSize(DEFAULT_PAGE_SIZE));
    size.min(MAX_PAGE_SIZE) as usize
}

fn invalid_token() -> ApiError {
    ApiError::with_detail(
        ErrorCode::InvalidParameter,
        "page_token: is not a token this API issued; pass next_page_token from a previous page unchanged".to_owned(),
    )
}

fn decode(token: &str, prefix: &str) -> Result<String, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid_token())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_token())?;
    text.strip_prefix(prefix)
        .map(str::to_owned)
        .ok_or_else(invalid_token)
}

pub fn encode_order_cursor(cursor: &OrderCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "o1:{}:{}",
        cursor.scheduled_at.timestamp_micros(),
        cursor.id
    ))
}

pub fn decode_order_cursor(token: &str) -> Result<OrderCursor, ApiError> {
    let key = decode(token, "o1:")?;
    let (micros, id) = key.split_once(':').ok_or_else(invalid_token)?;
    // Only instants a stored order can have: the database refuses years beyond its range.
    let scheduled_at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|instant| Timestamp::from_utc(*instant).is_ok())
        .ok_or_else(invalid_token)?;
    let id = OrderId::parse(id).ok_or_else(invalid_token)?;
    Ok(OrderCursor { scheduled_at, id })
}

pub fn encode_service_cursor(after: ServiceId) -> String {
    URL_SAFE_NO_PAD.encode(format!("s1:{after}"))
}

pub fn decode_service_cursor(token: &str) -> Result<ServiceId, ApiError> {
    ServiceId::parse(&decode(token, "s1:")?).ok_or_else(invalid_token)
}

impl_scalar_type!(
    PageSize,
    "PageSize",
    MetaSchema {
        minimum: Some(1.0),
        default: Some(Value::from(DEFAULT_PAGE_SIZE)),
        ..MetaSchema::new_with_format("integer", "int64")
    }
);

impl ParseFromParameter for PageSize {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        PageSize::parse(value).map_err(ParseError::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_cap_and_refuse() {
        assert_eq!(page_size(None), 100);
        assert_eq!(page_size(Some(PageSize::parse("5000").unwrap())), 1000);
        assert_eq!(page_size(Some(PageSize::parse("1").unwrap())), 1);
        assert_eq!(PageSize::parse("0"), Err("must be at least 1"));
        assert_eq!(PageSize::parse("-1"), Err("must be at least 1"));
        assert_eq!(PageSize::parse("1.5"), Err("must be an integer"));
    }

    #[test]
    fn order_cursors_round_trip() {
        let cursor = OrderCursor {
            scheduled_at: DateTime::from_timestamp_micros(1_667_301_071_111_000).unwrap(),
            id: OrderId::from_db(223),
        };
        assert_eq!(
            decode_order_cursor(&encode_order_cursor(&cursor)).unwrap(),
            cursor
        );
    }

    #[test]
    fn service_cursors_round_trip_and_do_not_pass_for_order_cursors() {
        let token = encode_service_cursor(ServiceId::from_db(456));
        assert_eq!(
            decode_service_cursor(&token).unwrap(),
            ServiceId::from_db(456)
        );
        assert!(decode_order_cursor(&token).is_err());
    }

    #[test]
    fn garbage_tokens_are_refused() {
        let out_of_range = URL_SAFE_NO_PAD.encode("o1:-300000000000000000:1");
        for token in ["", "abc", "!!!", "bzE6eDp5", "czE6LTE", &out_of_range] {
            assert!(decode_order_cursor(token).is_err(), "{token}");
            assert!(decode_service_cursor(token).is_err(), "{token}");
        }
    }
}
