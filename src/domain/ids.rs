//! Identifiers of orders and services.
//!
//! The API shows ids as strings so that their representation can change without breaking
//! clients; inside, they are positive 64-bit integers assigned by the database.

use std::fmt;

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(i64);

        impl $name {
            /// Reads an id as a client wrote it. Anything that is not the decimal form of a
            /// positive 64-bit integer names no record, so callers answer "not found" for `None`.
            pub fn parse(text: &str) -> Option<Self> {
                // One spelling per id: no sign (`i64::from_str` takes a `+`), no leading zeros.
                if text.starts_with('0') || !text.bytes().all(|byte| byte.is_ascii_digit()) {
                    return None;
                }
                text.parse::<i64>().ok().filter(|id| *id > 0).map(Self)
            }

            /// Wraps an id read from the database.
            pub fn from_db(id: i64) -> Self {
                Self(id)
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

identifier!(
    /// The id of an order.
    OrderId
);
identifier!(
    /// The id of a service.
    ServiceId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_positive_ids_parse() {
        assert_eq!(OrderId::parse("223").map(OrderId::get), Some(223));
        assert_eq!(
            ServiceId::parse("9223372036854775807").map(ServiceId::get),
            Some(i64::MAX)
        );
    }

    #[test]
    fn anything_else_names_no_record() {
        for text in [
            "",
            "0",
            "0123",
            "-1",
            "+5",
            "abc",
            "1.5",
            " 1",
            "1e3",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            assert_eq!(OrderId::parse(text), None, "{text:?}");
        }
    }
}
