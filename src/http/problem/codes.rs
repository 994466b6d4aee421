//! The one table of problem codes: for each stable `code`, its HTTP status, title, type URI and
//! meaning. Responses, the spec's per-operation error documentation and the API guide's
//! status-code table are all derived from it; a test keeps the guide's copy true.
//!
//! Adding a code is one row here; the place that refuses a request raises it with
//! [`super::ApiError::new`] (or, where the detail depends on the request, `with_detail`).

/// The numbers that the table's text quotes. Macros, so that `concat!` can splice them into the
/// text and each is written only here.
macro_rules! max_body_kib {
    () => {
        64
    };
}
macro_rules! max_body_bytes {
    () => {
        65536
    };
}
const _: () = assert!(max_body_bytes!() == max_body_kib!() * 1024);
macro_rules! retry_after_seconds {
    () => {
        5
    };
}
macro_rules! overloaded_retry_after_seconds {
    () => {
        1
    };
}

/// Bodies larger than this are refused with 413 before they are parsed.
pub const MAX_BODY_BYTES: usize = max_body_bytes!();

/// How long a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = retry_after_seconds!();

/// How long a client should wait before retrying a request refused because the instance had
/// too many in flight: requests are short, so a second frees many places.
pub const OVERLOADED_RETRY_AFTER_SECONDS: u32 = overloaded_retry_after_seconds!();
/// The `detail` of a `DATABASE_TIMEOUT` for work the database gave no answer to at all (a
/// hung or vanished server), cut off by the service's own bound: unlike a statement the
/// server cancelled, what was sent may still be carried out if the server resumes.
pub const NO_ANSWER_DETAIL: &str = concat!(
    "the database gave no answer in time; a write may still be carried out if it resumes: ",
    "read before retrying one, or retry it with the same Idempotency-Key; retry in ",
    retry_after_seconds!(),
    " seconds"
);

/// How long a client should wait before retrying a request whose `Idempotency-Key` is in use:
/// about as long as a create takes, so the retry meets the first request's answer.
pub const IDEMPOTENCY_RETRY_AFTER_SECONDS: u32 = 1;

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// The stable, UPPER_SNAKE identifier programs branch on.
    pub code: &'static str,
    pub status: u16,
    /// A short summary of the kind of problem, the body's `title`.
    pub title: &'static str,
    /// The body's `type`: a URI naming the kind of problem.
    pub type_uri: &'static str,
    /// When the code is returned, in one line (for the spec and the API guide).
    pub meaning: &'static str,
    /// The body's `detail` when the request adds nothing to it.
    pub detail: &'static str,
}

/// Declares [`ErrorCode`] and its table from one row per code.
macro_rules! error_codes {
    ($($variant:ident = ($status:literal, $code:literal, $slug:literal, $title:literal, $meaning:expr, $detail:expr);)+) => {
        /// A problem's stable `code`: what a program branches on. Each code has one status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant),+
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// This code's row of the table.
            pub const fn info(self) -> &'static CodeInfo {
                match self {
                    $(Self::$variant => &CodeInfo {
                        code: $code,
                        status: $status,
                        title: $title,
                        type_uri: concat!("urn:problem-type:orders:", $slug),
                        meaning: $meaning,
                        detail: $detail,
                    }),+
                }
            }
        }
    };
}

error_codes! {
    MalformedJson = (400, "MALFORMED_JSON", "malformed-json", "Malformed JSON",
        "the body is not JSON at all",
        "the request body is not valid JSON");
    InvalidBody = (400, "INVALID_BODY", "invalid-body", "Invalid request body",
        "the body is JSON but not what the operation accepts (a missing, unknown, repeated or mistyped field, or a value out of range); `detail` names the field",
        "the request body is not what this operation accepts");
    InvalidParameter = (400, "INVALID_PARAMETER", "invalid-parameter", "Invalid parameter",
        "a query parameter or header is malformed, out of range or given twice; `detail` names it",
        "a parameter is malformed");
    Unauthenticated = (401, "UNAUTHENTICATED", "unauthenticated", "Unauthenticated",
        "no API key was sent, or the one sent is not a current key (unknown, revoked or malformed); `WWW-Authenticate` says how to send one",
        "the API key is missing or not valid; send a current key as Authorization: Bearer <key>");
    Forbidden = (403, "FORBIDDEN", "forbidden", "Forbidden",
        "the API key is valid but lacks the scope the operation needs; `detail` names the scope",
        "the API key lacks the scope this operation needs");
    NotFound = (404, "NOT_FOUND", "not-found", "Not found",
        "no resource has this id (any id the server did not assign, whatever its form), or nothing is at this path",
        "no such resource");
    MethodNotAllowed = (405, "METHOD_NOT_ALLOWED", "method-not-allowed", "Method not allowed",
        "the path exists but not with this method; `Allow` lists the methods it has",
        "this path does not accept that method");
    OrderTimeConflict = (409, "ORDER_TIME_CONFLICT", "order-time-conflict", "Order time conflict",
        "another order is less than 3 hours away; `conflicting_order_id` names it",
        "datetime: must be at least 3 hours away from every other order");
    ServiceNameTaken = (409, "SERVICE_NAME_TAKEN", "service-name-taken", "Service name taken",
        "another service has this name, ignoring case",
        "name: another service already has this name (names are compared ignoring case)");
    ServiceInUse = (409, "SERVICE_IN_USE", "service-in-use", "Service in use",
        "an order books the service; change or delete those orders first",
        "the service is booked by at least one order; change or delete those orders first");
    IdempotencyKeyInUse = (409, "IDEMPOTENCY_KEY_IN_USE", "idempotency-key-in-use", "Idempotency key in use",
        "a request with the same `Idempotency-Key` is still being processed; retry after `Retry-After` seconds to get its answer",
        "a request with this Idempotency-Key is still being processed; nothing was changed by this one; retry shortly to get its answer");
    CursorExpired = (410, "CURSOR_EXPIRED", "cursor-expired", "Cursor expired",
        "the change feed's cursor points before the oldest event kept (events are purged after the retention period); re-read the current state, then read on with `after=now`",
        "after: the events after this cursor are no longer kept; re-read the current state (GET /orders and GET /services), then read on with after=now");
    PreconditionFailed = (412, "PRECONDITION_FAILED", "precondition-failed", "Precondition failed",
        "`If-Match` matches no current `ETag` (for `*`: the resource does not exist); nothing changed",
        "If-Match does not match the current ETag; fetch the resource again and retry with its ETag");
    PayloadTooLarge = (413, "PAYLOAD_TOO_LARGE", "payload-too-large", "Payload too large",
        concat!("the body is larger than ", max_body_kib!(), " KiB"),
        concat!("the request body must be at most ", max_body_bytes!(), " bytes"));
    UnsupportedMediaType = (415, "UNSUPPORTED_MEDIA_TYPE", "unsupported-media-type", "Unsupported media type",
        "the body is not declared as `application/json`, or is compressed, or is not UTF-8",
        "the request body must be JSON, sent with Content-Type: application/json");
    UnknownService = (422, "UNKNOWN_SERVICE", "unknown-service", "Unknown service",
        "a well-formed order names services that do not exist; `unknown_service_ids` lists them",
        "services: a service does not exist");
    IdempotencyKeyReused = (422, "IDEMPOTENCY_KEY_REUSED", "idempotency-key-reused", "Idempotency key reused",
        "the `Idempotency-Key` was sent before with a different request; nothing changed; send a new key with a new request",
        "this Idempotency-Key was sent before with a different request; nothing was changed; use a new key for a new request");
    RateLimited = (429, "RATE_LIMITED", "rate-limited", "Rate limited",
        "the API key sent more requests than its rate limit allows; nothing changed; `detail` names the limit; retry after `Retry-After` seconds",
        "the API key sent more requests than its rate limit allows; nothing was changed; retry after Retry-After seconds");
    Internal = (500, "INTERNAL", "internal", "Internal server error",
        "a fault on the server's side, never a client's mistake; the log has the cause, keyed by `request_id`",
        "the server failed to handle the request; quote the request_id when reporting it");
    DatabaseUnavailable = (503, "DATABASE_UNAVAILABLE", "database-unavailable", "Database unavailable",
        "the database cannot be reached; retry after `Retry-After` seconds",
        concat!("the database cannot be reached; retry in ", retry_after_seconds!(), " seconds"));
    DatabaseTimeout = (503, "DATABASE_TIMEOUT", "database-timeout", "Database timeout",
        "the database did not answer in time (a lock held too long, every connection busy, or a database that answers nothing); retry after `Retry-After` seconds. Nothing changed when the database itself cancelled the work; when it gave no answer at all, a write may still be carried out once it resumes, and the `detail` says so",
        concat!("the database did not answer in time; nothing was changed; retry in ", retry_after_seconds!(), " seconds"));
    ShuttingDown = (503, "SHUTTING_DOWN", "shutting-down", "Shutting down",
        "`/readyz` only: this instance is shutting down and takes no new work, so a load balancer should send requests to another; retry after `Retry-After` seconds",
        concat!("this instance is shutting down and takes no new work; send requests to another instance, or retry in ", retry_after_seconds!(), " seconds"));
    Contended = (503, "CONTENDED", "contended", "Too much contention",
        "concurrent writes kept aborting this one, even after retries; nothing changed; retry after `Retry-After` seconds",
        concat!("concurrent writes to the same records kept aborting this one; nothing was changed; retry in ", retry_after_seconds!(), " seconds"));
    Overloaded = (503, "OVERLOADED", "overloaded", "Overloaded",
        "the instance was working on as many requests as it takes at once, and no place came free within the queue wait (or the line was full); nothing changed; retry after `Retry-After` seconds",
        concat!("the service was working on as many requests as it takes at once, and no place came free in time; nothing was changed; retry in ", overloaded_retry_after_seconds!(), " second"));
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.info().code
    }

    pub fn status(self) -> u16 {
        self.info().status
    }
}

/// The API guide's status-code table rows for errors, one per code, as the guide shows them.
#[cfg(test)]
fn guide_rows() -> String {
    ErrorCode::ALL
        .iter()
        .map(|code| {
            let info = code.info();
            let mut letters = info.meaning.chars();
            let first = letters.next().map(|c| c.to_uppercase().to_string());
            let when = first.unwrap_or_default() + letters.as_str();
            format!("| {} | {when} | `{}` |\n", info.status, info.code)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_and_type_uris_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let info = code.info();
            assert!(seen.insert(info.code), "{} twice", info.code);
            assert!(
                info.code
                    .bytes()
                    .all(|byte| byte.is_ascii_uppercase() || byte == b'_'),
                "{} is not UPPER_SNAKE",
                info.code
            );
            let slug = info.code.to_ascii_lowercase().replace('_', "-");
            assert_eq!(info.type_uri, format!("urn:problem-type:orders:{slug}"));
            assert!((400..600).contains(&info.status), "{info:?}");
            assert!(
                !info.meaning.ends_with('.'),
                "{info:?}: the spec adds the full stop"
            );
        }
    }

    /// The API guide's table of status codes lists, after the successes, one row per problem
    /// code; those rows are the table's, in its order, word for word.
    #[test]
    fn the_api_guide_status_table_lists_every_code_as_the_table_does() {
        let guide = include_str!("../../../docs/api-guide.md");
        let (_, section) = guide
            .split_once("\n## Status codes\n")
            .expect("the API guide has a status-code section");
        let error_rows: String = section
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .filter(|line| line.starts_with("| 4") || line.starts_with("| 5"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            error_rows == guide_rows(),
            "the API guide's error rows differ from the code table; they should read:\n{}",
            guide_rows()
        );
    }
}
