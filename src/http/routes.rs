//! The one route table: every path the service answers, the methods each accepts, and the
//! scope each protected operation needs. The router is built from the same operations (the
//! OpenAPI traits' metadata, and the documents `http::app` adds), so the two cannot drift;
//! the request pipeline reads it to label, authenticate and refuse requests.

use std::sync::Arc;

use poem::{Request, http::Method};
use poem_openapi::registry::{MetaApi, MetaParamIn};

use super::auth;
use crate::domain::Scope;

/// Every path of the service, with its methods and scopes.
#[derive(Debug, Default)]
pub struct RouteTable(Vec<Arc<Route>>);

/// One path template and what it accepts.
#[derive(Debug)]
pub struct Route {
    /// As the spec writes it (`/orders/{id}`): the route label of its requests' metrics.
    pub path: String,
    template: Vec<String>,
    methods: Vec<Method>,
    protected: Vec<(Method, Scope)>,
    /// The methods whose operations read a query.
    query_readers: Vec<Method>,
}

/// The route a request's path matched, if any: found once, by the pipeline's first stages,
/// and carried in the request's extensions for the stages after them.
#[derive(Debug, Clone, Default)]
pub struct MatchedRoute(pub Option<Arc<Route>>);

impl MatchedRoute {
    /// Whether `request` goes to an operation that reads a body (a POST or a PUT that its path
    /// has). No other request's body is read, or even waited for.
    pub fn reads_body(request: &Request) -> bool {
        matches!(*request.method(), Method::POST | Method::PUT)
            && request
                .extensions()
                .get::<Self>()
                .and_then(|matched| matched.0.as_ref())
                .is_some_and(|route| route.accepts(request.method()))
    }
}

impl RouteTable {
    /// The table of the OpenAPI operations, read from their metadata so it cannot drift: an
    /// operation is protected when it declares a security requirement (an `ApiKey` parameter).
    pub fn from_meta(apis: Vec<MetaApi>) -> Self {
        let mut table = Self::default();
        for path in apis.into_iter().flat_map(|api| api.paths) {
            let methods = path.operations.iter().map(|op| op.method.clone()).collect();
            let protected = path
                .operations
                .iter()
                .filter(|op| !op.security.is_empty())
                .map(|op| {
                    let operation_id = op.operation_id.unwrap_or_default();
                    (
                        op.method.clone(),
                        auth::required_scope(&op.method, operation_id),
                    )
                })
                .collect();
            let query_readers = path
                .operations
                .iter()
                .filter(|op| {
                    op.params
                        .iter()
                        .any(|param| param.in_type == MetaParamIn::Query)
                })
                .map(|op| op.method.clone())
                .collect();
            table.0.push(Arc::new(Route {
                template: segments(&path.path),
                path: path.path,
                methods,
                protected,
                query_readers,
            }));
        }
        table
    }

    /// Adds a path that no API key protects.
    pub fn add(&mut self, template: &str, methods: Vec<Method>) {
        self.0.push(Arc::new(Route {
            path: template.to_owned(),
            template: segments(template),
            methods,
            protected: Vec::new(),
            query_readers: Vec::new(),
        }));
    }

    /// The route of a concrete path, if it is one of the table's.
    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        self.0.iter().find(|route| route.matches(path))
    }
}

impl Route {
    /// Whether `path` is one of this template's, as the router reads it: as many segments
    /// (an empty one counts, so `/orders/` is not `/orders`), each equal to the template's or
    /// a non-empty one standing for one of its `{parameters}`.
    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        self.template.iter().all(|pattern| {
            parts.next().is_some_and(|part| {
                pattern == part || (pattern.starts_with('{') && !part.is_empty())
            })
        }) && parts.next().is_none()
    }

    /// Whether the path has an operation for `method`.
    pub fn accepts(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// The `Allow` value of the path: its methods, plus HEAD where GET is.
    pub fn allow(&self) -> String {
        let mut names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        if self.methods.contains(&Method::GET) {
            names.push("HEAD");
        }
        names.join(", ")
    }

    /// Whether the operation of `method` reads any query parameter (HEAD is served by GET).
    pub fn reads_query(&self, method: &Method) -> bool {
        self.query_readers.contains(served_as(method))
    }

    /// The scope a request with `method` needs, if it goes to a protected operation (HEAD is
    /// served by GET).
    pub fn required_scope(&self, method: &Method) -> Option<Scope> {
        let method = served_as(method);
        self.protected
            .iter()
            .find(|(protected, _)| protected == method)
            .map(|(_, scope)| *scope)
    }
}

/// The method whose operation serves `method`: GET's for HEAD, else its own.
fn served_as(method: &Method) -> &Method {
    if *method == Method::HEAD {
        &Method::GET
    } else {
        method
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/').map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_the_methods_of_the_matching_template() {
        let mut routes = RouteTable::default();
        routes.add("/orders", vec![Method::POST, Method::GET]);
        routes.add(
            "/orders/{id}",
            vec![Method::GET, Method::PUT, Method::DELETE],
        );
        let allow = |path| routes.route(path).map(|route| route.allow());
        assert_eq!(allow("/orders").as_deref(), Some("POST, GET, HEAD"));
        assert_eq!(
            allow("/orders/223").as_deref(),
            Some("GET, PUT, DELETE, HEAD")
        );
        assert_eq!(allow("/orders/223/x"), None);
        assert_eq!(
            allow("/orders/"),
            None,
            "not /orders, as the router reads it"
        );
        assert_eq!(allow("//orders"), None);
    }
}
