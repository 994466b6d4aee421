//! `/services`: the services that orders book.

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::Example,
};
use serde::Serialize;

use super::{
    ApiTags,
    auth::ApiKey,
    conditional::{etag, if_match, if_none_match_matches},
    idempotency::{Created, IdempotencyKeyHeader, Replayable, idempotency_key_in, render_create},
    input::{Body, FieldError, Fields, ReadJson, string},
    json_body::{JsonBody, to_json},
    pagination::{self, PageSize, decode_service_cursor, encode_service_cursor},
    problem::documentation::{OperationError, operation_codes},
};
use crate::{
    app::{self, AppState},
    domain::{ServiceId, ServiceName, ServiceRecord, Timestamp},
};

/// A service that orders can book.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct Service {
    /// Assigned by the server.
    pub id: ServiceId,
    /// Unique, ignoring case.
    pub name: String,
    /// When the service was created.
    pub created_at: Timestamp,
    /// When the service was last renamed.
    pub updated_at: Timestamp,
    /// The name of the API key that created the service; `seed` for the sample data. Set by
    /// the server.
    pub created_by: String,
    /// The name of the API key that last renamed the service (or created it); set by the server.
    pub updated_by: String,
}

impl Example for Service {
    fn example() -> Self {
        sample_service("123", "Inspection")
    }
}

/// One of the sample services, as the API shows it, for the spec's examples.
fn sample_service(id: &str, name: &str) -> Service {
    let at = Timestamp::parse("2022-11-01T09:00:00.000Z").expect("valid example");
    Service {
        id: ServiceId::parse(id).expect("valid example"),
        name: name.to_owned(),
        created_at: at,
        updated_at: at,
        created_by: "seed".to_owned(),
        updated_by: "seed".to_owned(),
    }
}

/// A service record as the API shows it (its version goes in the `ETag`, not the body).
impl From<ServiceRecord> for Service {
    fn from(record: ServiceRecord) -> Self {
        Self {
            id: record.id,
            name: record.name,
            created_at: record.created_at,
            updated_at: record.updated_at,
            created_by: record.created_by,
            updated_by: record.updated_by,
        }
    }
}

/// The body of a create or a replace.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct ServiceInput {
    /// 1 to 200 characters, not only white space and invisible format characters (zero-width
    /// space, joiners, direction marks, ...), no control characters; stored without the white
    /// space around it. Unique, ignoring case.
    // The pattern says what `ServiceName::parse` checks: no control character anywhere, and at
    // least one character that is neither a control character nor white space (the Unicode
    // White_Space set, which `str::trim` removes) nor a format character of the BMP. Written with \x and \u escapes only, so that
    // ECMA-262, Python and Rust regex engines all read it alike.
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u3000\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: String,
}

impl Example for ServiceInput {
    /// A name the sample data does not have yet, so that "Try it out" creates a service.
    fn example() -> Self {
        Self {
            name: "Calibration".to_owned(),
        }
    }
}

impl ReadJson for ServiceInput {
    /// A service body is just its name.
    type Value = ServiceName;
    const FIELDS: &'static [&'static str] = &["name"];

    fn read(fields: &Fields) -> Result<ServiceName, FieldError> {
        fields.required("name", |value| {
            ServiceName::parse(string(value)?).map_err(|error| FieldError::new("", error))
        })
    }
}

/// A page of services.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct ServicePage {
    /// Services in id order.
    pub services: Vec<Service>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl Example for ServicePage {
    fn example() -> Self {
        Self {
            services: vec![
                sample_service("123", "Inspection"),
                sample_service("456", "Analysis"),
                sample_service("789", "Testing"),
            ],
            next_page_token: None,
        }
    }
}

#[derive(ApiResponse)]
enum ServiceCreated {
    /// The service was created.
    #[oai(status = 201)]
    Created(
        JsonBody<Service>,
        /// The new service's URL.
        #[oai(header = "Location")]
        String,
        /// The service's current version, for `If-Match` and `If-None-Match`.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
enum ServiceFetched {
    /// The service.
    #[oai(status = 200)]
    Ok(
        JsonBody<Service>,
        /// The service's current version, for `If-Match` and `If-None-Match`.
        #[oai(header = "ETag")]
        String,
    ),
    /// `If-None-Match` matches: the service has not changed.
    #[oai(status = 304)]
    NotModified(
        /// The service's current version.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
enum ServiceReplaced {
    /// The service was renamed; the body is its new state.
    #[oai(status = 200)]
    Ok(
        JsonBody<Service>,
        /// The service's new version.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
enum ServiceListed {
    /// A page of services.
    #[oai(status = 200)]
    Ok(JsonBody<ServicePage>),
}

#[derive(ApiResponse)]
enum ServiceDeleted {
    /// The service was deleted.
    #[oai(status = 204)]
    NoContent,
}

impl Created for ServiceRecord {
    fn body(&self) -> Vec<u8> {
        to_json(&Service::from(self.clone()))
    }

    fn location(&self) -> String {
        format!("/services/{}", self.id)
    }

    fn etag(&self) -> String {
        etag(&self.version)
    }
}

/// The 201 for a service just created.
fn created(record: ServiceRecord) -> ServiceCreated {
    let (location, tag) = (record.location(), record.etag());
    ServiceCreated::Created(JsonBody::new(&Service::from(record)), location, tag)
}

operation_codes! {
    CreateErrors = [
        Unauthenticated, Forbidden, RateLimited, IdempotencyKeyInUse, IdempotencyKeyReused, InvalidParameter,
        MalformedJson, InvalidBody, ServiceNameTaken, PayloadTooLarge, UnsupportedMediaType,
        Internal, DatabaseUnavailable, DatabaseTimeout, Contended, Overloaded,
    ];
    ListErrors = [
        Unauthenticated, Forbidden, RateLimited, InvalidParameter, Internal, DatabaseUnavailable, DatabaseTimeout, Overloaded];
    ViewErrors = [
        Unauthenticated, Forbidden, RateLimited, NotFound, Internal, DatabaseUnavailable, DatabaseTimeout, Overloaded];
    ReplaceErrors = [
        Unauthenticated, Forbidden, RateLimited,
        MalformedJson, InvalidBody, InvalidParameter, NotFound, ServiceNameTaken, PreconditionFailed,
        PayloadTooLarge, UnsupportedMediaType, Internal, DatabaseUnavailable, DatabaseTimeout, Contended, Overloaded,
    ];
    DeleteErrors = [
        Unauthenticated, Forbidden, RateLimited,
        InvalidParameter, NotFound, ServiceInUse, PreconditionFailed, Internal, DatabaseUnavailable, DatabaseTimeout, Contended, Overloaded,
    ];
}

/// The service operations. They hold no state: each is handed the [`AppState`] by poem.
pub struct ServicesApi;

#[OpenApi(tag = "ApiTags::Services")]
impl ServicesApi {
    /// Create a service
    ///
    /// Refused with 409 `SERVICE_NAME_TAKEN` when another service has the same name,
    /// ignoring case.
    #[oai(path = "/services", method = "post", operation_id = "service_create")]
    async fn service_create(
        &self,
        caller: ApiKey,
        state: Data<&AppState>,
        /// Makes a retry safe: the same request sent again with the same key, within the
        /// service's retention (24 hours unless its operators set another), gets the first
        /// answer again (with `Idempotent-Replayed: true`) and creates nothing. 1 to 255
        /// printable ASCII characters, bare or as a quoted string, in one header. Keys of
        /// different API keys never meet.
        #[oai(name = "Idempotency-Key")]
        // Documents the header; the key is read, and checked, by `idempotency_key_in`.
        _idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        request: &Request,
        body: Json<Body<ServiceInput>>,
    ) -> Result<Replayable<ServiceCreated>, OperationError<CreateErrors>> {
        let key = idempotency_key_in(request.headers())?;
        let answer =
            app::services::create(&state, &caller.0, &body.0.0, key.as_ref(), render_create)
                .await?;
        Ok(Replayable::from_answer(answer, created))
    }

    /// List services
    ///
    /// Services by id, a page at a time. Follow `next_page_token` until it is absent.
    #[oai(path = "/services", method = "get", operation_id = "service_list")]
    async fn service_list(
        &self,
        _caller: ApiKey,
        state: Data<&AppState>,
        /// How many services per page: 1 to 1000 (larger values are capped at 1000). Default 100.
        page_size: Query<Option<PageSize>>,
        /// `next_page_token` from the previous page. Opaque.
        page_token: Query<Option<String>>,
    ) -> Result<ServiceListed, OperationError<ListErrors>> {
        let limit = pagination::page_size(page_size.0);
        let after = page_token
            .0
            .as_deref()
            .map(decode_service_cursor)
            .transpose()?;
        let page = app::services::list(&state, after, limit).await?;
        Ok(ServiceListed::Ok(JsonBody::new(&ServicePage {
            services: page.items.into_iter().map(Service::from).collect(),
            next_page_token: page.next.map(encode_service_cursor),
        })))
    }

    /// View a service
    ///
    /// The service and its `ETag`. With `If-None-Match` naming the current `ETag`, the answer
    /// is 304 without a body.
    #[oai(path = "/services/:id", method = "get", operation_id = "service_view")]
    async fn service_view(
        &self,
        _caller: ApiKey,
        state: Data<&AppState>,
        /// The service's id.
        id: Path<String>,
        /// ETags the caller holds; if one is current the answer is 304 without a body.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<ServiceFetched, OperationError<ViewErrors>> {
        let record = app::services::view(&state, &id).await?;
        let tag = etag(&record.version);
        if if_none_match_matches(if_none_match.0.as_deref(), &record.version) {
            return Ok(ServiceFetched::NotModified(tag));
        }
        Ok(ServiceFetched::Ok(
            JsonBody::new(&Service::from(record)),
            tag,
        ))
    }

    /// Rename a service
    ///
    /// Orders that book the service show the new name (and get new ETags). Writes the
    /// service alone, however many orders book it.
    #[oai(
        path = "/services/:id",
        method = "put",
        operation_id = "service_update"
    )]
    async fn service_update(
        &self,
        caller: ApiKey,
        state: Data<&AppState>,
        /// The service's id.
        id: Path<String>,
        /// Rename only if the service's ETag is one of these (else 412). `*`: if the service
        /// exists (else 412). Absent: whatever its version.
        #[oai(name = "If-Match", validator(min_length = 1))]
        if_match: Header<Option<String>>,
        body: Json<Body<ServiceInput>>,
    ) -> Result<ServiceReplaced, OperationError<ReplaceErrors>> {
        let precondition = self::if_match(if_match.0.as_deref());
        let record = app::services::rename(&state, &caller.0, &id, precondition, &body.0.0).await?;
        let tag = etag(&record.version);
        Ok(ServiceReplaced::Ok(
            JsonBody::new(&Service::from(record)),
            tag,
        ))
    }

    /// Delete a service
    ///
    /// Refused with 409 `SERVICE_IN_USE` while any order books the service.
    #[oai(
        path = "/services/:id",
        method = "delete",
        operation_id = "service_delete"
    )]
    async fn service_delete(
        &self,
        caller: ApiKey,
        state: Data<&AppState>,
        /// The service's id.
        id: Path<String>,
        /// Delete only if the service's ETag is one of these (else 412). `*`: if the service
        /// exists (else 412). Absent: whatever its version.
        #[oai(name = "If-Match", validator(min_length = 1))]
        if_match: Header<Option<String>>,
    ) -> Result<ServiceDeleted, OperationError<DeleteErrors>> {
        app::services::delete(
            &state,
            &caller.0,
            &id,
            self::if_match(if_match.0.as_deref()),
        )
        .await?;
        Ok(ServiceDeleted::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::domain::ServiceName;

    /// The name's schema as the published spec states it: its pattern and length limits.
    static NAME_SCHEMA: std::sync::LazyLock<(regex::Regex, usize, usize)> =
        std::sync::LazyLock::new(published_name_schema);

    fn published_name_schema() -> (regex::Regex, usize, usize) {
        let spec = crate::http::published_spec(&crate::http::api_service());
        let name = &spec["components"]["schemas"]["ServiceInput"]["properties"]["name"];
        let pattern = name["pattern"].as_str().expect("the name has a pattern");
        let limit = |key: &str| name[key].as_u64().expect("the name has length limits") as usize;
        (
            regex::Regex::new(pattern).expect("the pattern is a regex"),
            limit("minLength"),
            limit("maxLength"),
        )
    }

    /// Characters where the rules have edges: white space of every kind, control characters,
    /// their neighbours, and ordinary letters.
    fn name_character() -> impl Strategy<Value = char> {
        prop_oneof![
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('\u{0}'),
            Just('\u{7f}'),
            Just('\u{85}'),
            Just('\u{9f}'),
            Just('\u{a0}'),
            Just('\u{a1}'),
            Just('\u{1680}'),
            Just('\u{2000}'),
            Just('\u{200a}'),
            Just('\u{200b}'),
            Just('\u{2028}'),
            Just('\u{202f}'),
            Just('\u{205f}'),
            Just('\u{3000}'),
            Just('\u{feff}'),
            Just('\u{ad}'),
            Just('\u{2060}'),
            Just('\u{2064}'),
            Just('\u{2065}'),
            Just('\u{202a}'),
            Just('\u{fffb}'),
            Just('\u{e0020}'),
            proptest::char::range('a', 'z'),
            proptest::char::range('\u{c0}', '\u{2fff}'),
            any::<char>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A client that validates against the spec sends exactly the names the server takes.
        #[test]
        fn the_spec_accepts_exactly_the_names_the_server_accepts(
            chars in proptest::collection::vec(name_character(), 0..8),
            padding in 0usize..3,
        ) {
            let (pattern, min_length, max_length) = &*NAME_SCHEMA;
            // Now and then a name near the length limit.
            let name: String = chars.iter().copied().chain(
                std::iter::repeat_n('x', if padding == 2 { max_length - 4 } else { 0 })
            ).collect();
            let length = name.chars().count();
            let spec_accepts =
                pattern.is_match(&name) && (*min_length..=*max_length).contains(&length);
            prop_assert_eq!(spec_accepts, ServiceName::parse(&name).is_ok(), "{:?}", name);
        }
    }
}
