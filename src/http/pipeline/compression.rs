//! Gzip for the large answers, when the client says it takes gzip: long lists, here, for each
//! request; the spec and the docs page (about 1.5 MB of HTML and script) are gzipped once at
//! start-up by `http::documents`, with [`gzip`], and chosen with [`accepts_gzip`], so the two
//! offer the same encodings and those answers cost nothing here.
//!
//! Only what is worth it and safe is compressed: a body of at least [`MIN_COMPRESSED_BYTES`]
//! of a text type, without a `Content-Encoding` of its own and without an `ETag`. A strong
//! entity tag names one exact sequence of bytes (RFC 9110, section 8.8.1), and ours are
//! compared with `If-Match` on writes, so an answer that carries one (a single order or
//! service, a few hundred bytes) goes out as it is rather than under a tag that would then
//! stand for two representations. Every answer of a compressible type says
//! `Vary: Accept-Encoding`, compressed or not, so a shared cache (the docs are cacheable)
//! never hands gzip to a client that did not ask for it.

use std::io::Write;

use flate2::{Compression, write::GzEncoder};
use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    http::{HeaderValue, Method, StatusCode, header},
};

/// Bodies below this are sent as they are: the gzip header and the CPU cost outweigh the gain.
pub const MIN_COMPRESSED_BYTES: usize = 1024;

/// Bodies above this are compressed on a blocking thread, not on the runtime's workers.
const COMPRESS_INLINE_BYTES: usize = 64 * 1024;

pub struct ResponseCompression;

impl<E: Endpoint> Middleware<E> for ResponseCompression {
    type Output = CompressionEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        CompressionEndpoint { inner }
    }
}

pub struct CompressionEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for CompressionEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Response> {
        let wants_gzip = *request.method() != Method::HEAD && accepts_gzip(&request);
        let mut response = self.inner.call(request).await?.into_response();
        if !has_compressible_type(&response) {
            return Ok(response);
        }
        if !varies_on_accept_encoding(&response) {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if !wants_gzip
            || response.status() == StatusCode::NO_CONTENT
            || response.headers().contains_key(header::CONTENT_ENCODING)
            || response.headers().contains_key(header::ETAG)
        {
            return Ok(response);
        }
        let body = response.take_body().into_bytes().await?;
        if body.len() < MIN_COMPRESSED_BYTES {
            response.set_body(body);
            return Ok(response);
        }
        // The fastest level: JSON still shrinks to a fifth or less, at a fraction of the
        // default level's CPU, which would be spent again for every such answer.
        let compressed = if body.len() <= COMPRESS_INLINE_BYTES {
            gzip(&body, Compression::fast())
        } else {
            tokio::task::spawn_blocking(move || gzip(&body, Compression::fast()))
                .await
                .expect("compressing a buffer does not panic")
        };
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.set_body(compressed);
        Ok(response)
    }
}

/// Whether `Accept-Encoding` takes gzip: named (or `x-gzip`, or `*` when gzip is not named)
/// with a quality above zero. `gzip;q=0` is a refusal, not a preference of zero.
pub fn accepts_gzip(request: &Request) -> bool {
    let mut gzip = None;
    let mut any = None;
    let entries = request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for entry in entries {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let acceptable = parts
            .filter_map(|parameter| parameter.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map(|(_, quality)| quality.trim().parse::<f32>().is_ok_and(|q| q > 0.0))
            .unwrap_or(true);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(acceptable && gzip.unwrap_or(true));
        } else if coding == "*" {
            any = Some(acceptable);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Text that compresses well: JSON (problems included), YAML, HTML, script.
fn has_compressible_type(response: &Response) -> bool {
    let Some(content_type) = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("json")
        || essence.ends_with("yaml")
        || essence.ends_with("javascript")
}

/// Whether the answer already says it varies on `Accept-Encoding` (an answer made in each
/// encoding beforehand says so itself, 304s included), so that it is not said twice.
fn varies_on_accept_encoding(response: &Response) -> bool {
    response
        .headers()
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("accept-encoding"))
}

/// `body` gzipped at `level`.
pub fn gzip(body: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
    encoder
        .write_all(body)
        .expect("writing into a Vec does not fail");
    encoder
        .finish()
        .expect("finishing into a Vec does not fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept_encoding(values: &[&str]) -> Request {
        let mut builder = Request::builder();
        for value in values {
            builder = builder.header(header::ACCEPT_ENCODING, *value);
        }
        builder.finish()
    }

    #[test]
    fn gzip_is_taken_only_when_accepted_with_a_quality_above_zero() {
        for (values, expected) in [
            (&["gzip"][..], true),
            (&["br, gzip;q=0.5"], true),
            (&["deflate", "x-gzip"], true),
            (&["*"], true),
            (&["gzip;q=0"], false),
            (&["gzip; q=0.000"], false),
            (&["*, gzip;q=0"], false),
            (&["*;q=0"], false),
            (&["br, deflate"], false),
            (&["identity"], false),
            (&[], false),
        ] {
            assert_eq!(
                accepts_gzip(&with_accept_encoding(values)),
                expected,
                "{values:?}"
            );
        }
    }
}
