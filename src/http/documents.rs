//! The documents beside the API: the spec as JSON and as YAML, and the docs page (Swagger UI
//! with the spec inside, about 1.5 MB).
//!
//! They are fixed for the life of the process, so each is made once, at start-up, in every
//! form it is sent in: as it is, and gzipped (the encodings the compression stage offers,
//! chosen by the same rule), each form with a strong entity tag of its own bytes. A request
//! only picks a form: GET, HEAD and a matching `If-None-Match` (304) are all answered from the
//! same bytes, so no request costs a compression, however many come and however soon their
//! clients hang up. The compression stage leaves these answers alone, since each carries its
//! `ETag` (and the gzipped ones their `Content-Encoding`).

use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use poem::{
    Endpoint, Request, Response, Result,
    http::{HeaderValue, Method, StatusCode, header},
};
use sha2::{Digest, Sha256};

use super::{
    conditional::{Revision, etag, if_none_match_matches},
    pipeline::{accepts_gzip, gzip},
};

/// A document made once, and the endpoint that serves it (GET and HEAD). Cheap to clone.
#[derive(Clone)]
pub struct FixedDocument(Arc<Forms>);

struct Forms {
    content_type: HeaderValue,
    plain: Form,
    gzipped: Form,
}

/// One sequence of bytes sent for a document, and what names it.
struct Form {
    body: Bytes,
    tag: ContentTag,
    etag: HeaderValue,
    content_encoding: Option<HeaderValue>,
}

impl FixedDocument {
    /// The document `body` of `content_type`, in each of its forms.
    pub fn new(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let plain: Bytes = body.into();
        // Made once, so a smaller answer is worth more CPU than the compression stage, which
        // pays for every answer, spends: the default level sends the docs page in a sixth less
        // than the fastest; the best level would save a further half per cent.
        let gzipped = Bytes::from(gzip(&plain, Compression::default()));
        Self(Arc::new(Forms {
            content_type: HeaderValue::from_static(content_type),
            plain: Form::new(plain, None),
            gzipped: Form::new(gzipped, Some(HeaderValue::from_static("gzip"))),
        }))
    }

    fn answer(&self, request: &Request) -> Response {
        let forms = &self.0;
        let form = if accepts_gzip(request) {
            &forms.gzipped
        } else {
            &forms.plain
        };
        // Said by a 304 too, which stands for the 200 a cache holds (RFC 9110, section 15.4.5).
        let response = Response::builder()
            .header(header::ETAG, form.etag.clone())
            .header(header::VARY, "accept-encoding");
        let condition = request
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok());
        if if_none_match_matches(condition, &form.tag) {
            return response.status(StatusCode::NOT_MODIFIED).finish();
        }
        let mut response = response.header(header::CONTENT_TYPE, forms.content_type.clone());
        if let Some(encoding) = &form.content_encoding {
            response = response.header(header::CONTENT_ENCODING, encoding.clone());
        }
        if request.method() == Method::HEAD {
            // The length the GET would send; the server sends no body after a HEAD's head.
            return response
                .header(header::CONTENT_LENGTH, form.body.len())
                .finish();
        }
        response.body(form.body.clone())
    }
}

impl Endpoint for FixedDocument {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Response> {
        Ok(self.answer(&request))
    }
}

impl Form {
    fn new(body: Bytes, content_encoding: Option<HeaderValue>) -> Self {
        let tag = ContentTag::of(&body);
        let etag =
            HeaderValue::from_str(&etag(&tag)).expect("hex digits in quotes are a header value");
        Self {
            body,
            tag,
            etag,
            content_encoding,
        }
    }
}

/// The entity tag of one sequence of bytes: the first half of its SHA-256, in hex. It changes
/// whenever a byte does, so it is strong; and the two forms of a document have two.
#[derive(Debug, PartialEq)]
struct ContentTag(String);

impl ContentTag {
    fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        Self(
            digest[..16]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        )
    }
}

impl Revision for ContentTag {
    fn opaque(&self) -> String {
        self.0.clone()
    }

    fn from_opaque(opaque: &str) -> Option<Self> {
        Some(Self(opaque.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_has_a_tag_of_its_own_bytes_and_the_same_bytes_the_same_tag() {
        let text = "openapi: 3.0.0\n".repeat(200);
        let document = FixedDocument::new("application/yaml", text.clone());
        let again = FixedDocument::new("application/yaml", text);
        let changed = FixedDocument::new("application/yaml", "openapi: 3.1.0\n".repeat(200));

        let (plain, gzipped) = (&document.0.plain, &document.0.gzipped);
        assert_ne!(plain.etag, gzipped.etag);
        assert_eq!(plain.etag, again.0.plain.etag);
        assert_eq!(gzipped.etag, again.0.gzipped.etag);
        assert_ne!(plain.etag, changed.0.plain.etag);
        assert_eq!(plain.etag.len(), 34, "{:?}", plain.etag);
        assert!(gzipped.body.len() * 10 < plain.body.len());
    }
}
