//! Checks the API key and the scope of every request to a protected operation before anything
//! else of it is read, so that a caller without the right key learns nothing from validation
//! errors: 401 for no usable key (503 while no key can be checked), 403 for a key without the
//! scope. The caller found goes on in the request's extensions, and its key's name into the
//! request's span and log line; never its secret.

use poem::{Endpoint, Request, Response, http::header::AUTHORIZATION};

use super::{Stage, answer, refuse, refuse_anonymous};
use crate::{
    app::authentication::{AuthError, Caller, KeyRing},
    domain::Scope,
    http::{
        problem::{ApiError, ErrorCode},
        routes::MatchedRoute,
    },
    telemetry::metrics::AuthFailure,
};

#[derive(Clone)]
pub struct Authenticate {
    keys: KeyRing,
}

impl Authenticate {
    pub fn new(keys: KeyRing) -> Self {
        Self { keys }
    }
}

impl Stage for Authenticate {
    async fn handle<E: Endpoint>(&self, mut request: Request, next: &E) -> Response {
        let scope = request
            .extensions()
            .get::<MatchedRoute>()
            .and_then(|matched| matched.0.as_ref())
            .and_then(|route| route.required_scope(request.method()));
        if let Some(scope) = scope {
            let caller = match authenticate(&request, &self.keys) {
                Ok(caller) => caller,
                // A 401 anyone can provoke; a 503 (no key can be checked) is the instance's.
                Err(error) if error.code() == ErrorCode::Unauthenticated => {
                    return refuse_anonymous(request, error);
                }
                Err(error) => return refuse(request, error),
            };
            tracing::Span::current().record("key", &*caller.name);
            if let Err(error) = permit(&caller, scope) {
                return refuse(request, error);
            }
            request.extensions_mut().insert(caller);
        }
        answer(next, request).await
    }
}

/// The caller whose credential `request` carries: else the 401 to answer with (or a 503 while
/// no credential can be checked). Whether the caller may do what it asks is [`permit`]'s
/// question, asked after the caller is known, so that a refusal is logged with its key.
pub fn authenticate(request: &Request, keys: &KeyRing) -> Result<Caller, ApiError> {
    bearer_token(request)
        .ok_or(AuthError::Missing)
        .and_then(|token| keys.authenticate(token))
        .inspect_err(|error| failure(request, *error).count())
        .map_err(|error| match error {
            // The key reloads log why; a line per refused request would add nothing.
            AuthError::KeysUnavailable => ApiError::new(ErrorCode::DatabaseUnavailable),
            AuthError::Missing => ApiError::with_detail(
                ErrorCode::Unauthenticated,
                "send an API key as Authorization: Bearer <key>",
            ),
            AuthError::Invalid => ApiError::new(ErrorCode::Unauthenticated),
        })
}

/// Whether `caller` may use an operation that needs `scope`: else the 403 to answer with.
pub fn permit(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    if caller.may(scope) {
        Ok(())
    } else {
        AuthFailure::Forbidden.count();
        Err(ApiError::forbidden(scope))
    }
}

/// The metrics' reason for a refused credential: finer than the answer, which tells a caller
/// only that no usable credential came.
fn failure(request: &Request, error: AuthError) -> AuthFailure {
    match error {
        AuthError::Missing if request.headers().contains_key(AUTHORIZATION) => {
            AuthFailure::Malformed
        }
        AuthError::Missing => AuthFailure::Missing,
        AuthError::Invalid => AuthFailure::Unknown,
        AuthError::KeysUnavailable => AuthFailure::KeysUnavailable,
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), if the
/// request has exactly one such header.
fn bearer_token(request: &Request) -> Option<&str> {
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_bearer_header_carries_a_token() {
        let token = |values: &[&str]| {
            let mut request = Request::builder();
            for value in values {
                request = request.header("authorization", *value);
            }
            bearer_token(&request.finish()).map(str::to_owned)
        };
        assert_eq!(token(&["Bearer ord_x"]).as_deref(), Some("ord_x"));
        assert_eq!(token(&["bearer  ord_x "]).as_deref(), Some("ord_x"));
        assert_eq!(token(&[]), None);
        assert_eq!(token(&["Basic b3JkOng="]), None);
        assert_eq!(token(&["Bearer "]), None);
        assert_eq!(token(&["Bearer ord_x", "Bearer ord_y"]), None);
    }
}
