//! Reads the body of a request whose operation takes one into memory, refusing it (413) as
//! soon as it is over the limit, declared or streamed, and puts it back for the stages and the
//! handler after it. Other requests' bodies are never read: dropped, they are drained if they
//! are already in, else the connection is closed after the answer. Bodies are small JSON
//! documents, so buffering them costs nothing worth saving. poem's own `SizeLimit` refuses
//! every request without `Content-Length`: chunked bodies, and GETs.

use poem::{Endpoint, IntoResponse, Request, Response, error::ReadBodyError, http::header};

use super::{Stage, answer};
use crate::http::{
    problem::{ApiError, ErrorCode, MAX_BODY_BYTES},
    routes::MatchedRoute,
};

#[derive(Clone)]
pub struct BodyLimit;

impl Stage for BodyLimit {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        if MatchedRoute::reads_body(&request)
            && let Err(error) = buffer_body(&mut request).await
        {
            return error.into_response();
        }
        answer(next, request).await
    }
}

async fn buffer_body(request: &mut Request) -> Result<(), ApiError> {
    let too_large = ApiError::new(ErrorCode::PayloadTooLarge);
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large);
    }
    match request.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
        Ok(bytes) => {
            request.set_body(bytes);
            Ok(())
        }
        // A chunked body without a declared length is caught here, as it streams in.
        Err(ReadBodyError::PayloadTooLarge) => Err(too_large),
        Err(error) => Err(ApiError::with_detail(
            ErrorCode::MalformedJson,
            format!("the request body could not be read: {error}"),
        )),
    }
}
