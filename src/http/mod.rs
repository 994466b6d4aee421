//! The HTTP layer: routes, request parsing, and mapping results and errors to responses.
//!
//! The API is described by poem-openapi traits, one module per resource; the published spec
//! (`/openapi.json`, `/openapi.yaml`, the committed `openapi.yaml`) is derived from them, with
//! no database in sight: the API types hold no state, and handlers are handed the
//! [`AppState`] as poem data. Handlers parse input into domain types, call the application
//! ([`crate::app`]), and map the outcome. No SQL here, and no decisions.

mod auth;
mod conditional;
mod documents;
mod events;
mod free_slots;
mod health;
mod idempotency;
mod input;
mod json_body;
mod orders;
mod pagination;
mod pipeline;
pub mod problem;
mod routes;
mod services;
mod spec;
mod value_types;
mod yaml;

use poem::{
    EndpointExt, IntoResponse, Response, Route,
    endpoint::{BoxEndpoint, make_sync},
    get,
    http::Method,
};
use poem_openapi::{ExtraHeader, OpenApi, OpenApiService, ServerObject, Tags};

use self::{
    documents::FixedDocument, events::EventsApi, free_slots::FreeSlotsApi, health::HealthApi,
    orders::OrdersApi, problem::ApiError, routes::RouteTable, services::ServicesApi,
};
use crate::app::AppState;

#[derive(Tags)]
enum ApiTags {
    /// Orders: a time slot, a fee and the services booked. No two orders are less than
    /// 3 hours apart.
    Orders,
    /// Services that orders book.
    Services,
    /// The change feed: every committed change of an order or a service, in commit order.
    Events,
    /// Liveness and readiness probes, and metrics.
    Health,
}

type Api = (OrdersApi, FreeSlotsApi, ServicesApi, EventsApi, HealthApi);

const DESCRIPTION: &str = "The one place where other systems create, change and read orders.\n\n\
Every error is `application/problem+json` with a stable `code`; every response carries \
`X-Request-Id`. Single resources carry a strong `ETag`: send it back in `If-Match` to update or \
delete safely, or in `If-None-Match` to revalidate.";

/// The OpenAPI service: the operations and their spec.
pub fn api_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (OrdersApi, FreeSlotsApi, ServicesApi, EventsApi, HealthApi),
        "Orders service",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
    // Relative: the API is wherever this document was fetched from.
    .server(ServerObject::new("/").description("The host serving this document."))
    .extra_response_header::<String, _>(
        ExtraHeader::new("X-Request-Id")
            .description("The request's id: the caller's own when it sent one, else a new one."),
    )
}

/// The spec as YAML, as committed in `openapi.yaml`. poem-openapi's own `spec_yaml` cannot be
/// used: with serde_json's `arbitrary_precision` (which keeps money exact) a JSON number only
/// serialises correctly through serde_json, and YAML would show every example number as a
/// `$serde_json::private::Number` map. So the finished JSON spec is written as YAML.
pub fn spec_yaml() -> String {
    yaml::to_yaml(&published_spec(&api_service()))
}

/// The spec as published: derived by poem-openapi, then finished (see [`spec`]).
pub fn published_spec(service: &OpenApiService<Api, ()>) -> serde_json::Value {
    let mut spec = serde_json::from_str(&service.spec()).expect("the generated spec is JSON");
    spec::finish(&mut spec);
    spec
}

/// The whole application: the API, the spec and the docs page, inside the request pipeline.
pub fn app(state: AppState) -> BoxEndpoint<'static, Response> {
    let service = api_service();
    let spec = published_spec(&service);
    let spec_json = serde_json::to_string_pretty(&spec).expect("a JSON value always serialises");
    let spec_yaml = yaml::to_yaml(&spec);
    // Swagger UI embeds the spec poem-openapi derived; show the finished one instead.
    let derived_spec = service.spec();
    let docs_html = service
        .swagger_ui_html()
        .replacen(&derived_spec, &spec_json, 1);
    // The documents beside the API's operations, each made once in every form it is sent in.
    let documents = [
        (
            "/openapi.json",
            FixedDocument::new("application/json", spec_json),
        ),
        (
            "/openapi.yaml",
            FixedDocument::new("application/yaml", spec_yaml),
        ),
        (
            "/docs",
            FixedDocument::new("text/html; charset=utf-8", docs_html),
        ),
    ];

    // The one route table: the operations' paths from their metadata, and the documents'.
    let mut routes = RouteTable::from_meta(<Api as OpenApi>::meta());
    let mut router = Route::new().nest("/", service);
    for (path, document) in documents {
        routes.add(path, vec![Method::GET]);
        router = router.at(path, get(document.clone()).head(document));
    }
    let setup = pipeline::Setup {
        routes,
        keys: state.keys.clone(),
        admission: state.admission,
        metrics: state.metrics.clone(),
    };
    // One type for every stage, made here: the server and an embedder need not know it.
    pipeline::around(router.data(state), setup)
        .map_to_response()
        .boxed()
}

/// `GET /metrics` alone, for a listener of its own (`ORDERS_METRICS_BIND`), where the
/// network can keep it from those who call the API: the same text the API's `/metrics` gives
/// when there is no such listener. Anything else there is a 404 (a 405 for another method),
/// as problem+json like every error.
pub fn metrics_app(state: AppState) -> BoxEndpoint<'static, Response> {
    let metrics = make_sync(move |request: poem::Request| {
        let path = request.uri().path();
        if path != "/metrics" {
            ApiError::nothing_at(path).into_response()
        } else if !matches!(*request.method(), Method::GET | Method::HEAD) {
            ApiError::method_not_allowed("GET, HEAD".to_owned()).into_response()
        } else {
            health::metrics_response(&state)
        }
    });
    pipeline::around_metrics(metrics).map_to_response().boxed()
}
