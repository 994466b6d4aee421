//! Authentication and scopes as HTTP sees them.
//!
//! The request pipeline checks the credential and the scope of every protected operation
//! before anything else is read (`pipeline/authentication.rs`), and hands the handler the
//! [`Caller`] it found. Operations declare that they are protected by taking an [`ApiKey`]
//! parameter, which is also what puts the security requirement into the spec. Which scope an
//! operation needs is [`required_scope`], the one rule both the pipeline and the spec read.

use poem::{Request, http::Method};
use poem_openapi::{SecurityScheme, auth::Bearer};

use crate::{app::authentication::Caller, domain::Scope};

// The caller of a protected operation, as the request pipeline authenticated it. (A plain comment: the
// doc comment below is the scheme's description in the spec, shown in Swagger UI's
// Authorize dialog.)
#[derive(SecurityScheme)]
#[oai(
    rename = "ApiKey",
    ty = "bearer",
    bearer_format = "ord_…",
    checker = "caller_from_pipeline"
)]
/// An API key, sent as `Authorization: Bearer <secret>`. Keys are created with
/// `orders keys create --name NAME --scope SCOPE`; each holds one or more of the scopes
/// `orders:read` (every GET and HEAD), `orders:write` (POST, PUT and DELETE of orders) and
/// `services:write` (POST, PUT and DELETE of services). Each operation's description names the
/// scope it needs, as does its `x-required-scopes`.
pub struct ApiKey(pub Caller);

/// The pipeline has authenticated every request that reaches a protected operation; the
/// check here only hands its finding to the handler.
async fn caller_from_pipeline(request: &Request, _bearer: Bearer) -> Option<Caller> {
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
}
