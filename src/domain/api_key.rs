//! Who may call the API: the scopes a key can hold, the names keys go by, and how often a key
//! may call.

use std::{fmt, num::NonZeroU32, str::FromStr};

use chrono::{DateTime, Utc};

/// What a key may do. A key holds one or more; each operation needs exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every GET and HEAD: orders, services, and whatever read-only operation comes later.
    OrdersRead,
    /// POST, PUT and DELETE of orders.
    OrdersWrite,
    /// POST, PUT and DELETE of services.
    ServicesWrite,
}

impl Scope {
    pub const ALL: [Self; 3] = [Self::OrdersRead, Self::OrdersWrite, Self::ServicesWrite];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrdersRead => "orders:read",
            Self::OrdersWrite => "orders:write",
            Self::ServicesWrite => "services:write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a scope; the scopes are orders:read, orders:write and services:write")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Self, UnknownScope> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| UnknownScope(text.to_owned()))
    }
}

/// The name of an API key: what the log, `created_by` and `updated_by` show for its calls.
/// 1 to 63 characters of lower-case ASCII letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit; so names are unique however a reader folds case, and safe in any log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

/// The name the sample data's rows carry in `created_by`; no key may take it.
pub const SEED_ACTOR: &str = "seed";

/// The key the private cluster's first start creates, with every scope.
pub const LOCAL_KEY_NAME: &str = "local";

const MAX_KEY_NAME_CHARS: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyNameError {
    #[error(
        "must be 1 to {MAX_KEY_NAME_CHARS} characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    Malformed,
    #[error("is reserved: the sample data's rows carry it")]
    Reserved,
}

impl KeyName {
    pub fn parse(text: &str) -> Result<Self, KeyNameError> {
        let mut bytes = text.bytes();
        let well_formed = text.len() <= MAX_KEY_NAME_CHARS
            && bytes
                .next()
                .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
            && bytes.all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"._-".contains(&byte)
            });
        if !well_formed {
            return Err(KeyNameError::Malformed);
        }
        if text == SEED_ACTOR {
            return Err(KeyNameError::Reserved);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyName {
    type Err = KeyNameError;

    fn from_str(text: &str) -> Result<Self, KeyNameError> {
        Self::parse(text)
    }
}

/// How often one key may call: on average `per_second` requests a second, and up to `burst`
/// at once after a quiet spell (a token bucket of `burst` tokens, refilled at `per_second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// The most requests a second a limit may name: far more than one instance serves, and small
/// enough to be stored as a PostgreSQL `integer`.
pub const MAX_RATE_PER_SECOND: u32 = 1_000_000;

impl RateLimit {
    /// A limit of `per_second`, with bursts of `burst` (by default one second's worth).
    pub fn new(per_second: NonZeroU32, burst: Option<NonZeroU32>) -> Self {
        Self {
            per_second,
            burst: burst.unwrap_or(per_second),
        }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let requests = if self.per_second.get() == 1 {
            "request"
        } else {
            "requests"
        };
        write!(
            f,
            "{} {requests} a second, in bursts of up to {}",
            self.per_second, self.burst
        )
    }
}

/// A key as `orders keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The key's own rate limit; none when the instance's default applies.
    pub rate: Option<RateLimit>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key that may be used, as the key cache holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The key's own rate limit; none when the instance's default applies.
    pub rate: Option<RateLimit>,
    pub lookup_id: String,
    pub secret_hash: Vec<u8>,
}

/// What is stored of a new key's secret.
pub struct StoredSecret<'a> {
    pub lookup_id: &'a str,
    pub hash: &'a [u8; 32],
}

/// Whether [`revoke`] revoked the key now or found it revoked already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_back_from_their_names() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("orders:delete".parse::<Scope>().is_err());
        assert!("ORDERS:READ".parse::<Scope>().is_err());
    }

    #[test]
    fn key_names_are_short_lower_case_and_safe() {
        for good in ["local", "billing-sync", "ci.2", "a", &"x".repeat(63)] {
            assert!(KeyName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Billing",
            "-lead",
            ".x",
            "a b",
            "naïve",
            "a\nb",
            &"x".repeat(64),
        ] {
            assert_eq!(KeyName::parse(bad), Err(KeyNameError::Malformed), "{bad:?}");
        }
        assert_eq!(KeyName::parse("seed"), Err(KeyNameError::Reserved));
    }

    #[test]
    fn a_rate_limit_bursts_one_second_s_worth_unless_told_otherwise() {
        let five = NonZeroU32::new(5).unwrap();
        let twelve = NonZeroU32::new(12).unwrap();
        assert_eq!(RateLimit::new(five, None).burst, five);
        let limit = RateLimit::new(five, Some(twelve));
        assert_eq!(limit.burst, twelve);
        assert_eq!(
            limit.to_string(),
            "5 requests a second, in bursts of up to 12"
        );
        let one = NonZeroU32::new(1).unwrap();
        assert_eq!(
            RateLimit::new(one, None).to_string(),
            "1 request a second, in bursts of up to 1"
        );
    }
}
