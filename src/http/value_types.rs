//! How domain values appear in the OpenAPI schema and in JSON.
//!
//! `Money` is a JSON number read from its exact decimal text (serde_json keeps that text
//! with its `arbitrary_precision` feature), so no amount ever passes through binary floating
//! point. `Timestamp` is an RFC 3339 string, always written in UTC with milliseconds. The
//! parameters' own types (`PageSize`, `WaitSeconds`) declare theirs beside their rules, with
//! [`impl_scalar_type`].

use poem_openapi::{
    registry::MetaSchema,
    types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON},
};
use serde::{Serialize, Serializer};
use serde_json::{Number, Value, value::RawValue};

use crate::domain::{Money, MoneyError, OrderId, ServiceId, Timestamp};

/// Reads a money amount from a JSON value, refusing anything but a number.
pub fn money_from_json(value: &Value) -> Result<Money, MoneyError> {
    match value {
        Value::Number(number) => Money::parse(number.as_str()),
        _ => Err(MoneyError::NotANumber),
    }
}

pub fn money_to_json(money: &Money) -> Value {
    let number: Number = money
        .to_string()
        .parse()
        .expect("a decimal's text is a JSON number");
    Value::Number(number)
}

/// Declares `$ty` a poem-openapi type of one value, named `$name`, whose schema is `$schema`.
macro_rules! impl_scalar_type {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl poem_openapi::types::Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                poem_openapi::registry::MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
    };
}
pub(super) use impl_scalar_type;

impl_scalar_type!(
    Money,
    "Money",
    MetaSchema {
        description: Some(
            "An amount in currency units, exact to the cent: 0 to 1000000000, at most 2 decimal places."
        ),
        minimum: Some(0.0),
        maximum: Some(1_000_000_000.0),
        multiple_of: Some(0.01),
        example: Some(Value::from(100)),
        ..MetaSchema::new("number")
    }
);

impl ParseFromJSON for Money {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        money_from_json(&value.unwrap_or_default()).map_err(ParseError::custom)
    }
}

impl ToJSON for Money {
    fn to_json(&self) -> Option<Value> {
        Some(money_to_json(self))
    }
}

/// A JSON number, written from the amount's exact text.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // SAFETY: a normalised decimal's text (`100`, `19.99`: digits, at most one point, no
        // sign, since amounts are never negative, and no exponent) is a JSON number.
        let number = unsafe { RawValue::from_string_unchecked(self.to_string()) };
        number.serialize(serializer)
    }
}

impl_scalar_type!(
    Timestamp,
    "Timestamp",
    MetaSchema {
        description: Some(
            "An RFC 3339 date-time with an offset (`Z` or `+hh:mm`), years 0001 to 9999, no leap second (`:60`). The API reads digits only to the millisecond, and writes date-times in UTC with millisecond precision and a `Z`."
        ),
        example: Some(Value::from("2022-11-01T11:11:11.111Z")),
        ..MetaSchema::new_with_format("string", "date-time")
    }
);

/// Ids are strings in the API (see [`crate::domain::OrderId`]), written from their number.
macro_rules! impl_id_type {
    ($($id:ty),+) => {
        $(
            impl_scalar_type!($id, "string", MetaSchema::new("string"));

            impl ParseFromJSON for $id {
                fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                    match value {
                        Some(Value::String(text)) => {
                            <$id>::parse(&text).ok_or_else(|| ParseError::custom("is not an id"))
                        }
                        _ => Err(ParseError::custom("must be a string")),
                    }
                }
            }

            impl ToJSON for $id {
                fn to_json(&self) -> Option<Value> {
                    Some(Value::String(self.to_string()))
                }
            }

            impl Serialize for $id {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    serializer.serialize_str(itoa::Buffer::new().format(self.get()))
                }
            }
        )+
    };
}
impl_id_type!(OrderId, ServiceId);

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Timestamp::parse(&text).map_err(ParseError::custom),
            _ => Err(ParseError::custom("must be a string")),
        }
    }
}

impl ParseFromParameter for Timestamp {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Timestamp::parse(value).map_err(ParseError::custom)
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.to_string()))
    }
}

/// The API's form of an instant (see [`Timestamp`]'s `Display`), as a JSON string.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.rfc3339();
        serializer
            .serialize_str(std::str::from_utf8(&text).expect("digits and separators are ASCII"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_the_exact_text_of_the_number() {
        let value: Value = serde_json::from_str("19.99").unwrap();
        let money = money_from_json(&value).unwrap();
        assert_eq!(
            serde_json::to_string(&money_to_json(&money)).unwrap(),
            "19.99"
        );
    }

    #[test]
    fn money_is_not_read_from_a_string() {
        assert_eq!(
            money_from_json(&Value::from("19.99")),
            Err(MoneyError::NotANumber)
        );
    }

    #[test]
    fn digits_a_float_would_lose_are_seen_and_refused() {
        // As an f64 this is 0.1 exactly; as text it has 18 decimal places.
        let value: Value = serde_json::from_str("0.100000000000000001").unwrap();
        assert_eq!(money_from_json(&value), Err(MoneyError::TooPrecise));
    }
}
