//! `/services`: the services that orders book.

use deadpool_postgres::Pool;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::Example,
};

use super::{
    ApiTags,
    conditional::{IfMatch, etag, if_none_match_matches},
    input::{Body, FieldError, Fields, ReadJson, string},
    pagination::{self, PageSize, decode_service_cursor, encode_service_cursor},
    problem::{ApiError, ApiFailure, documented_errors, not_found_as},
};
use crate::{
    domain::{ServiceId, ServiceName, Timestamp},
    storage::{self, services::ServiceRecord},
};

/// A service that orders can book.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Service {
    /// Assigned by the server.
    pub id: String,
    /// Unique, ignoring case.
    pub name: String,
    /// When the service was created.
    pub created_at: Timestamp,
    /// When the service was last renamed.
    pub updated_at: Timestamp,
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
        id: id.to_owned(),
        name: name.to_owned(),
        created_at: at,
        updated_at: at,
    }
}

impl From<ServiceRecord> for Service {
    fn from(record: ServiceRecord) -> Self {
        Self {
            id: record.id.to_string(),
            name: record.name,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// The body of a create or a replace.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct ServiceInput {
    /// 1 to 200 characters, not only white space, no control characters; stored without the
    /// white space around it. Unique, ignoring case.
    // The pattern says what `ServiceName::parse` checks: no control character anywhere, and at
    // least one character that is neither a control character nor white space (the Unicode
    // White_Space set, which `str::trim` removes). Written with \x and \u escapes only, so that
    // ECMA-262, Python and Rust regex engines all read it alike.
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
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
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ServicePage {
    /// Services in id order.
    pub services: Vec<Service>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
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
        Json<Service>,
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
        Json<Service>,
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
        Json<Service>,
        /// The service's new version.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
enum ServiceListed {
    /// A page of services.
    #[oai(status = 200)]
    Ok(Json<ServicePage>),
}

#[derive(ApiResponse)]
enum ServiceDeleted {
    /// The service was deleted.
    #[oai(status = 204)]
    NoContent,
}

documented_errors! {
    CreateErrors = [
        MalformedJson, InvalidBody, ServiceNameTaken, PayloadTooLarge, UnsupportedMediaType,
        Internal, DatabaseUnavailable, Contended,
    ];
    ListErrors = [InvalidParameter, Internal, DatabaseUnavailable];
    ViewErrors = [NotFound, Internal, DatabaseUnavailable];
    ReplaceErrors = [
        MalformedJson, InvalidBody, NotFound, ServiceNameTaken, PreconditionFailed,
        PayloadTooLarge, UnsupportedMediaType, Internal, DatabaseUnavailable, Contended,
    ];
    DeleteErrors = [
        NotFound, ServiceInUse, PreconditionFailed, Internal, DatabaseUnavailable, Contended,
    ];
}

/// Parses a path id; an id that cannot be one names no service.
fn service_id(id: &str) -> Result<ServiceId, ApiError> {
    ServiceId::parse(id).ok_or_else(|| ApiError::not_found("service", id))
}

pub struct ServicesApi {
    pub pool: Pool,
}

#[OpenApi(tag = "ApiTags::Services")]
impl ServicesApi {
    /// Create a service
    ///
    /// Refused with 409 `SERVICE_NAME_TAKEN` when another service has the same name,
    /// ignoring case.
    #[oai(path = "/services", method = "post", operation_id = "service_create")]
    async fn service_create(
        &self,
        body: Json<Body<ServiceInput>>,
    ) -> Result<ServiceCreated, ApiFailure<CreateErrors>> {
        let record = storage::services::insert(&self.pool, &body.0.0).await?;
        let location = format!("/services/{}", record.id);
        let tag = etag(record.version);
        Ok(ServiceCreated::Created(Json(record.into()), location, tag))
    }

    /// List services
    ///
    /// Services by id, a page at a time. Follow `next_page_token` until it is absent.
    #[oai(path = "/services", method = "get", operation_id = "service_list")]
    async fn service_list(
        &self,
        /// How many services per page: 1 to 1000 (larger values are capped at 1000). Default 100.
        page_size: Query<Option<PageSize>>,
        /// `next_page_token` from the previous page. Opaque.
        page_token: Query<Option<String>>,
    ) -> Result<ServiceListed, ApiFailure<ListErrors>> {
        let limit = pagination::page_size(page_size.0);
        let after = page_token
            .0
            .as_deref()
            .map(decode_service_cursor)
            .transpose()?;
        let page = storage::services::list(&self.pool, after, limit).await?;
        Ok(ServiceListed::Ok(Json(ServicePage {
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
        /// The service's id.
        id: Path<String>,
        /// ETags the caller holds; if one is current the answer is 304 without a body.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<ServiceFetched, ApiFailure<ViewErrors>> {
        let record = storage::services::fetch(&self.pool, service_id(&id)?)
            .await
            .map_err(not_found_as("service", &id))?;
        let tag = etag(record.version);
        if if_none_match_matches(if_none_match.0.as_deref(), record.version) {
            return Ok(ServiceFetched::NotModified(tag));
        }
        Ok(ServiceFetched::Ok(Json(record.into()), tag))
    }

    /// Rename a service
    ///
    /// Orders that book the service show the new name (and get new ETags).
    #[oai(
        path = "/services/:id",
        method = "put",
        operation_id = "service_update"
    )]
    async fn service_update(
        &self,
        /// The service's id.
        id: Path<String>,
        /// Replace only if the service's ETag is one of these (else 412). `*` or absent: any.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: Json<Body<ServiceInput>>,
    ) -> Result<ServiceReplaced, ApiFailure<ReplaceErrors>> {
        let service = service_id(&id)?;
        let if_match = IfMatch::parse(if_match.0.as_deref());
        let record = storage::services::rename(&self.pool, service, &body.0.0, if_match.versions())
            .await
            .map_err(not_found_as("service", &id))?;
        let tag = etag(record.version);
        Ok(ServiceReplaced::Ok(Json(record.into()), tag))
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
        /// The service's id.
        id: Path<String>,
        /// Delete only if the service's ETag is one of these (else 412). `*` or absent: any.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> Result<ServiceDeleted, ApiFailure<DeleteErrors>> {
        let if_match = IfMatch::parse(if_match.0.as_deref());
        storage::services::delete(&self.pool, service_id(&id)?, if_match.versions())
            .await
            .map_err(not_found_as("service", &id))?;
        Ok(ServiceDeleted::NoContent)
    }
}
