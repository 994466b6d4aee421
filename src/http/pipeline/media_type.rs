//! Refuses a body that an operation of this path and method would read, when it is not
//! declared as plain, uncompressed UTF-8 `application/json` (415). The framework would also
//! take any `+json` type (`application/merge-patch+json`, say) as JSON, and apply a patch as a
//! replacement.

use poem::{
    Endpoint, Request, Response,
    http::{HeaderValue, header},
};

use super::{Stage, ambiguity, answer, refuse};
use crate::http::{
    problem::{ApiError, ErrorCode},
    routes::MatchedRoute,
};

#[derive(Clone)]
pub struct MediaType;

impl Stage for MediaType {
    async fn handle<E: Endpoint>(&self, request: Request, next: &E) -> Response {
        if let Err(error) = check_media_type(&request) {
            return refuse(request, error);
        }
        answer(next, request).await
    }
}

fn check_media_type(request: &Request) -> Result<(), ApiError> {
    if !MatchedRoute::reads_body(request) {
        return Ok(());
    }
    let header_text = |name| {
        request
            .headers()
            .get(name)
            .map(|value: &HeaderValue| value.to_str().unwrap_or("(not text)"))
    };
    let content_type = header_text(header::CONTENT_TYPE);
    if let Some(error) =
        ambiguity::unreadable_encoding(header_text(header::CONTENT_ENCODING), content_type)
    {
        return Err(error);
    }
    let Some(content_type) = content_type else {
        return Ok(());
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType));
    }
    Ok(())
}
