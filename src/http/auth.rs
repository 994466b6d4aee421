//! Authentication and scopes as HTTP sees them.
//!
//! The edge middleware checks the credential and the scope of every protected operation
//! before anything else is read (so a caller without the right key learns nothing from
//! validation errors), and hands the handler the [`Caller`] it found. Operations declare
//! that they are protected by taking an [`ApiKey`] parameter, which is also what puts the
//! security requirement into the spec. Which scope an operation needs is [`required_scope`],
//! the one rule both the edge and the spec read.

use poem::{
    Request,
    http::{Method, header::AUTHORIZATION},
};
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::problem::{ApiError, ErrorCode};
use crate::{
    app::authentication::{AuthError, Caller, KeyRing},
    domain::Scope,
    telemetry::metrics::AuthFailure,
};

// The caller of a protected operation, as the edge authenticated it. (A plain comment: the
// doc comment below is the scheme's description in the spec, shown in Swagger UI's
// Authorize dialog.)
#[derive(SecurityScheme)]
#[oai(
    rename = "ApiKey",
    ty = "bearer",
    bearer_format = "ord_…",
    checker = "caller_from_edge"
)]
/// An API key, sent as `Authorization: Bearer <secret>`. Keys are created with
/// `orders keys create --name NAME --scope SCOPE`; each holds one or more of the scopes
/// `orders:read` (every GET and HEAD), `orders:write` (POST, PUT and DELETE of orders) and
/// `services:write` (POST, PUT and DELETE of services). Each operation's description names the
/// scope it needs, as does its `x-required-scopes`.
pub struct ApiKey(pub Caller);

/// The edge has authenticated every request that reaches a protected operation; the check
/// here only hands its finding to the handler.
async fn caller_from_edge(request: &Request, _bearer: Bearer) -> Option<Caller> {
    request.extensions().get::<Caller>().cloned()
}

/// The scope an operation needs: `orders:read` to read anything; to write, the scope of the
/// resource its operation id names (`order_…` or `service_…`).
pub fn required_scope(method: &Method, operation_id: &str) -> Scope {
    if matches!(*method, Method::GET | Method::HEAD) {
        return Scope::OrdersRead;
    }
    match operation_id.split('_').next() {
        Some("service") => Scope::ServicesWrite,
        Some("order") => Scope::OrdersWrite,
        _ => panic!("{operation_id}: a write to a resource with no scope of its own"),
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
    fn reads_need_orders_read_and_writes_the_scope_of_their_resource() {
        assert_eq!(
            required_scope(&Method::GET, "service_view"),
            Scope::OrdersRead
        );
        assert_eq!(
            required_scope(&Method::HEAD, "order_list"),
            Scope::OrdersRead
        );
        assert_eq!(
            required_scope(&Method::POST, "order_create"),
            Scope::OrdersWrite
        );
        assert_eq!(
            required_scope(&Method::DELETE, "service_delete"),
            Scope::ServicesWrite
        );
    }

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
