//! The middleware every request passes through, outermost.
//!
//! It gives each request an id (the caller's `X-Request-Id`, or a new one), authenticates the
//! caller of a protected operation and checks its scope (see [`super::auth`]), enforces the
//! body size limit and the body's media type, puts conditional headers in the form handlers read,
//! refuses what is over the instance's or the key's bounds (see [`super::overload`]),
//! runs the request inside a tracing span, turns every error the framework raises (bad JSON,
//! wrong content type, unknown route, wrong method) into the API's problem+json, adds
//! `X-Request-Id` to every response, logs each request once, and records its duration under
//! its route template (see [`crate::telemetry::metrics`]).

use std::{sync::Arc, time::Instant};

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    error::{MethodNotAllowedError, NotFoundError, ReadBodyError},
    http::{HeaderValue, Method, header},
};
use poem_openapi::{
    error::{AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError},
    registry::MetaApi,
};
use tracing::Instrument;

use crate::{
    app::authentication::KeyRing,
    domain::Scope,
    telemetry::metrics::{Metrics, UNMATCHED_ROUTE},
};

use super::{
    ambiguity, auth,
    input::FIELD_ERROR_MARKER,
    overload::{self, InFlightLimit},
    problem::{ApiError, ErrorCode, MAX_BODY_BYTES, REQUEST_ID, error_chain},
};

const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the server says of an empty `If-Match`, which the spec refuses with `minLength: 1`.
pub const EMPTY_IF_MATCH: &str = "must not be empty";

/// Which methods each path accepts, for the `Allow` header of a 405, and which of its
/// operations are protected, with the scope each needs.
#[derive(Debug, Default)]
pub struct RouteTable(Vec<Route>);

#[derive(Debug)]
struct Route {
    /// As the spec writes it (`/orders/{id}`): the route label of its requests' metrics.
    path: String,
    template: Vec<String>,
    methods: Vec<Method>,
    protected: Vec<(Method, Scope)>,
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
            table.0.push(Route {
                template: segments(&path.path),
                path: path.path,
                methods,
                protected,
            });
        }
        table
    }

    /// Adds a path that no API key protects.
    pub fn add(&mut self, template: &str, methods: Vec<Method>) {
        self.0.push(Route {
            path: template.to_owned(),
            template: segments(template),
            methods,
            protected: Vec::new(),
        });
    }

    fn route(&self, path: &str) -> Option<&Route> {
        self.0.iter().find(|route| route.matches(path))
    }

    /// The methods a concrete path accepts, if it is one of the table's.
    fn methods(&self, path: &str) -> Option<&[Method]> {
        self.route(path).map(|route| route.methods.as_slice())
    }

    /// The `Allow` value for a concrete path: its methods, plus HEAD where GET is.
    fn allow(&self, path: &str) -> Option<String> {
        let methods = self.methods(path)?;
        let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        if methods.contains(&Method::GET) {
            names.push("HEAD");
        }
        Some(names.join(", "))
    }
}

impl Route {
    /// Whether `path` is one of this template's: as many segments, each equal to the
    /// template's or standing for one of its `{parameters}`.
    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/').filter(|segment| !segment.is_empty());
        self.template.iter().all(|pattern| {
            parts
                .next()
                .is_some_and(|part| pattern.starts_with('{') || pattern == part)
        }) && parts.next().is_none()
    }

    /// The scope a request with `method` needs, if it goes to a protected operation (HEAD is
    /// served by GET).
    fn required_scope(&self, method: &Method) -> Option<Scope> {
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.protected
            .iter()
            .find(|(protected, _)| protected == method)
            .map(|(_, scope)| *scope)
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|segment| !segment.is_empty())
        .map(str::to_owned)
        .collect()
}

pub struct Edge {
    routes: Arc<RouteTable>,
    keys: KeyRing,
    in_flight: InFlightLimit,
    metrics: Metrics,
}

impl Edge {
    /// The edge for `routes`, checking callers against `keys`, working on at most
    /// `max_in_flight` requests at once, recording into `metrics`.
    pub fn new(routes: RouteTable, keys: KeyRing, max_in_flight: usize, metrics: Metrics) -> Self {
        Self {
            routes: Arc::new(routes),
            keys,
            in_flight: InFlightLimit::new(max_in_flight),
            metrics,
        }
    }
}

impl<E: Endpoint> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeEndpoint {
            inner,
            routes: self.routes.clone(),
            keys: self.keys.clone(),
            in_flight: self.in_flight.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

pub struct EdgeEndpoint<E> {
    inner: E,
    routes: Arc<RouteTable>,
    keys: KeyRing,
    in_flight: InFlightLimit,
    metrics: Metrics,
}

impl<E: Endpoint> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> Result<Response> {
        let started = Instant::now();
        let _active = self.metrics.request_started();
        let request_id = request_id(&request);
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        // `key` is the name of the caller's API key, once it is known; never its secret.
        let span = tracing::info_span!(
            "request",
            %request_id,
            %method,
            %path,
            key = tracing::field::Empty
        );
        // Matched once: it gives the scope to check and the route label of the metrics.
        let route = self.routes.route(&path);

        let handled = REQUEST_ID.scope(
            request_id.clone(),
            async {
                if let Some(scope) = route.and_then(|route| route.required_scope(&method)) {
                    let caller = match auth::authenticate(&request, &self.keys) {
                        Ok(caller) => caller,
                        Err(error) => return error.into_response(),
                    };
                    span.record("key", &*caller.name);
                    if let Err(error) =
                        auth::permit(&caller, scope).and_then(|()| overload::check_rate(&caller))
                    {
                        return error.into_response();
                    }
                    request.extensions_mut().insert(caller);
                }
                if let Err(error) = self.check_media_type(&request) {
                    return error.into_response();
                }
                let body = match buffer_body(&mut request).await {
                    Ok(body) => body,
                    Err(error) => return error.into_response(),
                };
                if let Err(error) = self.check_ambiguity(&request, &body) {
                    return error.into_response();
                }
                // Taken once the body is in, so a client trickling bodies holds no place
                // (its connection is bounded by the request timeout instead); held until the
                // answer is produced, at the end of this block, unless the handler gives it up
                // through the clone in the request's extensions.
                let place = match self.in_flight.admit(&path) {
                    Ok(place) => place,
                    Err(error) => return error.into_response(),
                };
                request.extensions_mut().insert(place.clone());
                normalise_conditional_headers(&mut request);
                match self.inner.call(request).await {
                    Ok(response) => response.into_response(),
                    Err(error) if error.is_from_response() => error.into_response(),
                    Err(error) => self.to_api_error(&error, &path).into_response(),
                }
            }
            .instrument(span.clone()),
        );
        let mut response = self.metrics.scope(handled).await;

        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        // No client may guess a type other than the one declared (a problem body as HTML, say).
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CACHE_CONTROL, cache_control(&path));
        let status = response.status().as_u16();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        span.in_scope(|| tracing::info!(status, latency_ms, "request served"));
        let route = route.map_or(UNMATCHED_ROUTE, |route| route.path.as_str());
        self.metrics
            .request_served(method.as_str(), route, status, started.elapsed());
        Ok(response)
    }
}

impl<E> EdgeEndpoint<E> {
    /// Refuses a body that an operation of this path and method would read, when it is not
    /// declared as plain `application/json`. The framework would also take any `+json` type
    /// (`application/merge-patch+json`, say) as JSON, and apply a patch as a replacement.
    fn check_media_type(&self, request: &Request) -> Result<(), ApiError> {
        let reads_body = matches!(*request.method(), Method::POST | Method::PUT)
            && self
                .routes
                .methods(request.uri().path())
                .is_some_and(|methods| methods.contains(request.method()));
        if !reads_body {
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

    /// Refuses a request another reader could read differently: a query parameter given twice,
    /// or a body with a key twice (see [`ambiguity`]).
    fn check_ambiguity(&self, request: &Request, body: &[u8]) -> Result<(), ApiError> {
        if let Some(name) = request
            .uri()
            .query()
            .and_then(ambiguity::repeated_query_parameter)
        {
            return Err(ambiguity::repeated_parameter_error(&name));
        }
        if body.is_empty() {
            return Ok(());
        }
        match ambiguity::duplicate_json_key(body) {
            Some(path) => Err(ambiguity::duplicate_key_error(&path)),
            None => Ok(()),
        }
    }

    /// Maps an error the framework raised (not one of our typed responses) to the API's own.
    fn to_api_error(&self, error: &poem::Error, path: &str) -> ApiError {
        if let Some(payload) = error.downcast_ref::<ParseRequestPayloadError>() {
            return match payload.reason.split_once(FIELD_ERROR_MARKER) {
                Some((_, detail)) => ApiError::with_detail(ErrorCode::InvalidBody, detail),
                None => ApiError::not_json(&payload.reason),
            };
        }
        if error.is::<AuthorizationError>() {
            return ApiError::new(ErrorCode::Unauthenticated);
        }
        if error.is::<ContentTypeError>() {
            return ApiError::new(ErrorCode::UnsupportedMediaType);
        }
        if let Some(param) = error.downcast_ref::<ParseParamError>() {
            // The spec's pattern refused it; say what a key is, not which pattern failed.
            if param.name == super::idempotency::IDEMPOTENCY_KEY {
                return ApiError::invalid_idempotency_key();
            }
            let problem = parameter_problem(&param.reason);
            let detail = format!("{}: {problem}", param.name);
            return ApiError::with_detail(ErrorCode::InvalidParameter, detail);
        }
        if error.is::<NotFoundError>() {
            return ApiError::with_detail(
                ErrorCode::NotFound,
                format!("there is nothing at {path}"),
            );
        }
        if error.is::<MethodNotAllowedError>()
            && let Some(allow) = self.routes.allow(path)
        {
            return ApiError::method_not_allowed(allow);
        }
        if error.status().is_client_error() {
            tracing::warn!(error = %error, status = error.status().as_u16(), "unmapped client error");
            return ApiError::with_detail(ErrorCode::InvalidParameter, error.to_string());
        }
        tracing::error!(error = %error_chain(error), "unhandled error");
        ApiError::new(ErrorCode::Internal)
    }
}

/// The reason a parameter was refused, without the framework's wording around it:
/// poem-openapi writes `failed to parse "<type name>": <problem>`, and adds
/// ` (occurred while parsing "<type name>")` when the parameter is optional. Type names mean
/// nothing to a caller; integer types' own problems are their parser's words, replaced too.
fn parameter_problem(reason: &str) -> String {
    if reason.starts_with("failed to parse \"integer_") {
        return "must be an integer".to_owned();
    }
    // poem-openapi's words for a required parameter that is absent: `Type "<name>" expects an
    // input value.`
    if reason.starts_with("Type \"") && reason.ends_with("\" expects an input value.") {
        return "is required".to_owned();
    }
    // The only length rule on a parameter is `If-Match`'s `minLength: 1`.
    if reason.ends_with("verification failed. minLength(1)") {
        return EMPTY_IF_MATCH.to_owned();
    }
    let problem = match reason.split_once("\": ") {
        Some((prefix, problem)) if prefix.starts_with("failed to parse \"") => problem,
        _ => reason,
    };
    let problem = match problem.rsplit_once(" (occurred while parsing \"") {
        Some((problem, _type_name)) => problem,
        None => problem,
    };
    problem.to_owned()
}

/// Puts `If-Match` and `If-None-Match` in the one form the handlers read: all of a header's
/// lines joined into one list, as RFC 9110 (section 5.3) says they mean, with any byte outside
/// visible ASCII escaped as `%XX`. The framework reads only a header's first line, and takes a
/// line it cannot read as text for no header at all, which for `If-Match` would mean "any
/// version" and let a write through unconditionally. Such bytes are allowed inside an entity
/// tag; escaped, the tag still matches none of ours (ours are digits), as it must.
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

/// What caches may keep: the spec and the docs page change only with a deploy, so a few
/// minutes is safe; everything else is data that another caller may change at any moment, and
/// may be a key's private view, so none of it is stored.
fn cache_control(path: &str) -> HeaderValue {
    if matches!(path, "/openapi.json" | "/openapi.yaml" | "/docs") {
        HeaderValue::from_static("public, max-age=300")
    } else {
        HeaderValue::from_static("no-store")
    }
}

/// The caller's request id when it is a sensible one, else a fresh one.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 200)
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// A random (version 4) UUID, from the thread's own generator: `Uuid::new_v4` asks the
/// kernel for every one, a system call per request. Request ids need to be unique, not secret.
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Reads the body into memory, refusing it if it is over the limit, and puts it back for the
/// handler. Bodies are small JSON documents, so buffering them costs nothing worth saving.
async fn buffer_body(request: &mut Request) -> Result<bytes::Bytes, ApiError> {
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
            request.set_body(bytes.clone());
            Ok(bytes)
        }
        // A chunked body without a declared length is caught here, as it streams in.
        Err(ReadBodyError::PayloadTooLarge) => Err(too_large),
        Err(error) => Err(ApiError::with_detail(
            ErrorCode::MalformedJson,
            format!("the request body could not be read: {error}"),
        )),
    }
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
        assert_eq!(routes.allow("/orders").as_deref(), Some("POST, GET, HEAD"));
        assert_eq!(
            routes.allow("/orders/223").as_deref(),
            Some("GET, PUT, DELETE, HEAD")
        );
        assert_eq!(routes.allow("/orders/223/x"), None);
    }

    #[test]
    fn parameter_problems_lose_the_framework_wording() {
        assert_eq!(
            parameter_problem(
                "failed to parse \"PageSize\": must be at least 1 (occurred while parsing \"optional_PageSize\")"
            ),
            "must be at least 1"
        );
        assert_eq!(
            parameter_problem("failed to parse \"Timestamp\": must be an RFC 3339 date-time"),
            "must be an RFC 3339 date-time"
        );
        assert_eq!(
            parameter_problem("failed to parse \"integer_int64\": invalid digit found in string"),
            "must be an integer"
        );
        assert_eq!(
            parameter_problem("Type \"Timestamp\" expects an input value."),
            "is required"
        );
        assert_eq!(
            parameter_problem("failed to parse \"string\": verification failed. minLength(1)"),
            "must not be empty"
        );
    }
}
