//! Puts `If-Match` and `If-None-Match` in the one form the handlers read: all of a header's
//! lines joined into one list, as RFC 9110 (section 5.3) says they mean, with any byte outside
//! visible ASCII escaped as `%XX`. The framework reads only a header's first line, and takes a
//! line it cannot read as text for no header at all, which for `If-Match` would mean "any
//! version" and let a write through unconditionally. Such bytes are allowed inside an entity
//! tag; escaped, the tag still matches none of ours (ours are digits), as it must.

use poem::{
    Endpoint, Request, Response,
    http::{HeaderValue, header},
};

use super::{Stage, answer};

#[derive(Clone)]
pub struct ConditionalHeaders;

impl Stage for ConditionalHeaders {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        normalise_conditional_headers(&mut request);
        answer(next, request).await
    }
}

fn normalise_conditional_headers(request: &mut Request) {
    for name in [header::IF_MATCH, header::IF_NONE_MATCH] {
        let lines: Vec<String> = request
            .headers()
            .get_all(&name)
            .iter()
            .map(|line| visible_ascii(line.as_bytes()))
            .collect();
        if lines.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&lines.join(", ")) {
            request.headers_mut().insert(name, value);
        }
    }
}

fn visible_ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&byte| match byte {
            b' ' | b'\t' | 0x21..=0x7e => char::from(byte).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
