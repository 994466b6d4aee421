//! `/orders`: create, list, view, replace and delete orders.

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
    input::{Body, FieldError, Fields, ReadJson, read_array, read_object, scalar, string},
    json_body::{JsonBody, ListWriter, Listed, to_json},
    pagination::{self, PageSize, decode_order_cursor, encode_order_cursor},
    problem::{
        ApiError, ErrorCode,
        documentation::{OperationError, operation_codes},
    },
    value_types::money_from_json,
};
use crate::{
    app::{
        self, AppState,
        orders::{OrderQuery, OrderRequest},
    },
    domain::{Money, OrderId, OrderRecord, ServiceId, Timestamp},
};

/// An order: a time slot, a fee and the services booked.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct Order {
    /// Assigned by the server.
    pub id: OrderId,
    /// When the order is scheduled. No two orders are less than 3 hours apart.
    pub datetime: Timestamp,
    /// The order's total fee in currency units, exact to the cent.
    pub totalfee: Money,
    /// The services booked, in the order the client listed them.
    pub services: Vec<BookedService>,
    /// When the order was created.
    pub created_at: Timestamp,
    /// When the order was last replaced.
    pub updated_at: Timestamp,
    /// The name of the API key that created the order; `seed` for the sample data. Set by
    /// the server.
    pub created_by: String,
    /// The name of the API key that last replaced the order (or created it); set by the server.
    pub updated_by: String,
}

impl Example for Order {
    fn example() -> Self {
        sample_order("223", "2022-11-01T11:11:11.111Z", ("123", "Inspection"))
    }
}

/// One of the sample orders, as the API shows it, for the spec's examples.
fn sample_order(id: &str, datetime: &str, (service_id, service_name): (&str, &str)) -> Order {
    let at = Timestamp::parse(datetime).expect("valid example");
    Order {
        id: OrderId::parse(id).expect("valid example"),
        datetime: at,
        totalfee: Money::parse("100").expect("valid example"),
        services: vec![BookedService {
            id: ServiceId::parse(service_id).expect("valid example"),
            name: service_name.to_owned(),
        }],
        created_at: at,
        updated_at: at,
        created_by: "seed".to_owned(),
        updated_by: "seed".to_owned(),
    }
}

/// An order record as the API shows it (its revision goes in the `ETag`, not the body).
impl From<OrderRecord> for Order {
    fn from(record: OrderRecord) -> Self {
        Self {
            id: record.id,
            datetime: record.scheduled_at,
            totalfee: record.total_fee,
            services: record
                .services
                .into_iter()
                .map(|service| BookedService {
                    id: service.id,
                    name: service.name,
                })
                .collect(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            created_by: record.created_by,
            updated_by: record.updated_by,
        }
    }
}

/// A service as an order shows it.
#[derive(Debug, Clone, Object, Serialize)]
pub struct BookedService {
    /// The service's id.
    pub id: ServiceId,
    /// The service's current name.
    pub name: String,
}

/// The body of a create or a replace: every field is required, and no other is accepted.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct OrderInput {
    /// When the order is scheduled: an RFC 3339 date-time with an offset. Must be at least
    /// 3 hours from every other order.
    pub datetime: Timestamp,
    /// The total fee: 0 to 1000000000, at most 2 decimal places.
    pub totalfee: Money,
    /// The services to book: 1 to 50, no repeats, each an existing service.
    #[oai(validator(min_items = 1, max_items = 50, unique_items))]
    pub services: Vec<ServiceRef>,
}

impl Example for OrderInput {
    /// Books the sample's Inspection two days after the sample orders: a slot that neither the
    /// sample data nor the API guide's examples take, so that "Try it out" creates an order.
    fn example() -> Self {
        Self {
            datetime: Timestamp::parse("2022-11-03T11:11:11.111Z").expect("valid example"),
            totalfee: Money::parse("100").expect("valid example"),
            services: vec![ServiceRef {
                id: "123".to_owned(),
            }],
        }
    }
}

impl ReadJson for OrderInput {
    type Value = OrderRequest;
    const FIELDS: &'static [&'static str] = &["datetime", "totalfee", "services"];

    fn read(fields: &Fields) -> Result<OrderRequest, FieldError> {
        Ok(OrderRequest {
            scheduled_at: fields.required("datetime", |value| {
                Timestamp::parse(string(value)?).map_err(|error| FieldError::new("", error))
            })?,
            total_fee: fields.required("totalfee", scalar(money_from_json))?,
            service_ids: fields.required("services", |value| {
                read_array(value, read_object::<ServiceRef>)
            })?,
        })
    }
}

/// A reference to a service by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Object)]
#[oai(deny_unknown_fields)]
pub struct ServiceRef {
    /// The id of an existing service.
    pub id: String,
}

impl ReadJson for ServiceRef {
    /// A reference is just the id, as written.
    type Value = String;
    const FIELDS: &'static [&'static str] = &["id"];

    fn read(fields: &Fields) -> Result<String, FieldError> {
        fields.required("id", |value| string(value).map(str::to_owned))
    }
}

/// A page of orders.
#[derive(Object, Serialize)]
#[oai(example)]
pub struct OrderPage {
    /// Orders in (datetime, id) order.
    pub orders: Listed<Order>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl Example for OrderPage {
    fn example() -> Self {
        Self {
            orders: vec![
                sample_order("223", "2022-11-01T11:11:11.111Z", ("123", "Inspection")),
                sample_order("224", "2022-11-01T14:11:11.111Z", ("789", "Testing")),
                sample_order("225", "2022-11-01T17:11:11.111Z", ("456", "Analysis")),
            ]
            .into_iter()
            .collect(),
            next_page_token: None,
        }
    }
}

#[derive(ApiResponse)]
enum OrderCreated {
    /// The order was created.
    #[oai(status = 201)]
    Created(
        JsonBody<Order>,
        /// The new order's URL.
        #[oai(header = "Location")]
        String,
        /// The order's current version, for `If-Match` and `If-None-Match`.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
enum OrderFetched {
    /// The order.
    #[oai(status = 200)]
    Ok(
        JsonBody<Order>,
        /// The order's current version, for `If-Match` and `If-None-Match`.
        #[oai(header = "ETag")]
        String,
    ),
    /// `If-None-Match` matches: the order has not changed.
    #[oai(status = 304)]
    NotModified(
        /// The order's current version.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
enum OrderReplaced {
    /// The order was replaced; the body is its new state.
    #[oai(status = 200)]
    Ok(
        JsonBody<Order>,
        /// The order's new version.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
enum OrderListed {
    /// A page of orders.
    #[oai(status = 200)]
    Ok(JsonBody<OrderPage>),
}

#[derive(ApiResponse)]
enum OrderDeleted {
    /// The order was deleted; its time slot is free.
    #[oai(status = 204)]
    NoContent,
}

impl Created for OrderRecord {
    fn body(&self) -> Vec<u8> {
        to_json(&Order::from(self.clone()))
    }

    fn location(&self) -> String {
        format!("/orders/{}", self.id)
    }

    fn etag(&self) -> String {
        etag(&self.revision)
    }
}

/// The 201 for an order just created.
fn created(record: OrderRecord) -> OrderCreated {
    let (location, tag) = (record.location(), record.etag());
    OrderCreated::Created(JsonBody::new(&Order::from(record)), location, tag)
}

operation_codes! {
    CreateErrors = [
        Unauthenticated, Forbidden, RateLimited, IdempotencyKeyInUse, IdempotencyKeyReused, InvalidParameter,
        MalformedJson, InvalidBody, OrderTimeConflict, PayloadTooLarge, UnsupportedMediaType,
        UnknownService, Internal, DatabaseUnavailable, DatabaseTimeout, Contended, Overloaded,
    ];
    ListErrors = [
        Unauthenticated, Forbidden, RateLimited, InvalidParameter, Internal, DatabaseUnavailable, DatabaseTimeout, Overloaded];
    ViewErrors = [
        Unauthenticated, Forbidden, RateLimited, NotFound, Internal, DatabaseUnavailable, DatabaseTimeout, Overloaded];
    ReplaceErrors = [
        Unauthenticated, Forbidden, RateLimited,
        MalformedJson, InvalidBody, InvalidParameter, NotFound, OrderTimeConflict, PreconditionFailed,
        PayloadTooLarge, UnsupportedMediaType, UnknownService, Internal, DatabaseUnavailable,
        DatabaseTimeout, Contended, Overloaded,
    ];
    DeleteErrors = [
        Unauthenticated, Forbidden, RateLimited,
        InvalidParameter, NotFound, PreconditionFailed, Internal, DatabaseUnavailable, DatabaseTimeout, Contended, Overloaded,
    ];
}

/// The order operations. They hold no state: each is handed the [`AppState`] by poem, so the
/// spec can be produced with no database at all.
pub struct OrdersApi;

#[OpenApi(tag = "ApiTags::Orders")]
impl OrdersApi {
    /// Create an order
    ///
    /// Books the services at `datetime` for `totalfee`. Refused with 409
    /// `ORDER_TIME_CONFLICT` when another order is less than 3 hours away, and with 422
    /// `UNKNOWN_SERVICE` when a service does not exist.
    #[oai(path = "/orders", method = "post", operation_id = "order_create")]
    async fn order_create(
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
        body: Json<Body<OrderInput>>,
    ) -> Result<Replayable<OrderCreated>, OperationError<CreateErrors>> {
        let key = idempotency_key_in(request.headers())?;
        let answer =
            app::orders::create(&state, &caller.0, body.0.0, key.as_ref(), render_create).await?;
        Ok(Replayable::from_answer(answer, created))
    }

    /// List orders
    ///
    /// Orders by `datetime`, then id, a page at a time. Follow `next_page_token` until it
    /// is absent to see every order exactly once.
    #[oai(path = "/orders", method = "get", operation_id = "order_list")]
    // Each parameter is one of the operation's, as poem-openapi takes them.
    #[allow(clippy::too_many_arguments)]
    async fn order_list(
        &self,
        _caller: ApiKey,
        state: Data<&AppState>,
        /// How many orders per page: 1 to 1000 (larger values are capped at 1000). Default 100.
        page_size: Query<Option<PageSize>>,
        /// `next_page_token` from the previous page. Opaque.
        page_token: Query<Option<String>>,
        /// Only orders at or after this date-time.
        from: Query<Option<Timestamp>>,
        /// Only orders strictly before this date-time. Not earlier than `from` (else 400).
        to: Query<Option<Timestamp>>,
        /// Only orders that book this service.
        service_id: Query<Option<String>>,
    ) -> Result<OrderListed, OperationError<ListErrors>> {
        // An empty range is asked for with `from == to`; a reversed one is a mistake, which an
        // empty page would hide.
        if let (Some(from), Some(to)) = (from.0, to.0)
            && from > to
        {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidParameter,
                "from: must not be later than to",
            )
            .into());
        }
        let query = OrderQuery {
            from: from.0,
            to: to.0,
            service_id: service_id.0,
            after: page_token
                .0
                .as_deref()
                .map(decode_order_cursor)
                .transpose()?,
            limit: pagination::page_size(page_size.0),
        };
        // Each order is written as soon as it is read: a page of a thousand orders of fifty
        // services each is never in memory but as its answer's text.
        let mut orders = ListWriter::new();
        let next =
            app::orders::list(&state, query, |record| orders.push(&Order::from(record))).await?;
        let page = OrderPage {
            orders: orders.finish(),
            next_page_token: next.as_ref().map(encode_order_cursor),
        };
        Ok(OrderListed::Ok(JsonBody::new(&page)))
    }

    /// View an order
    ///
    /// The order with its services' current names, and its `ETag`. With `If-None-Match`
    /// naming the current `ETag`, the answer is 304 without a body.
    #[oai(path = "/orders/:id", method = "get", operation_id = "order_view")]
    async fn order_view(
        &self,
        _caller: ApiKey,
        state: Data<&AppState>,
        /// The order's id.
        id: Path<String>,
        /// ETags the caller holds; if one is current the answer is 304 without a body.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<OrderFetched, OperationError<ViewErrors>> {
        let record = app::orders::view(&state, &id).await?;
        let tag = etag(&record.revision);
        if if_none_match_matches(if_none_match.0.as_deref(), &record.revision) {
            return Ok(OrderFetched::NotModified(tag));
        }
        Ok(OrderFetched::Ok(JsonBody::new(&Order::from(record)), tag))
    }

    /// Replace an order
    ///
    /// Sets the order's `datetime`, `totalfee` and `services` all at once. Moving an order
    /// within 3 hours of its own old time is fine; within 3 hours of another order is 409.
    /// A failed replace changes nothing.
    #[oai(path = "/orders/:id", method = "put", operation_id = "order_update")]
    async fn order_update(
        &self,
        caller: ApiKey,
        state: Data<&AppState>,
        /// The order's id.
        id: Path<String>,
        /// Replace only if the order's ETag is one of these (else 412). `*`: if the order
        /// exists (else 412). Absent: whatever its version.
        #[oai(name = "If-Match", validator(min_length = 1))]
        if_match: Header<Option<String>>,
        body: Json<Body<OrderInput>>,
    ) -> Result<OrderReplaced, OperationError<ReplaceErrors>> {
        let precondition = self::if_match(if_match.0.as_deref());
        let record = app::orders::replace(&state, &caller.0, &id, precondition, body.0.0).await?;
        let tag = etag(&record.revision);
        Ok(OrderReplaced::Ok(JsonBody::new(&Order::from(record)), tag))
    }

    /// Delete an order
    ///
    /// Frees the order's time slot at once.
    #[oai(path = "/orders/:id", method = "delete", operation_id = "order_delete")]
    async fn order_delete(
        &self,
        caller: ApiKey,
        state: Data<&AppState>,
        /// The order's id.
        id: Path<String>,
        /// Delete only if the order's ETag is one of these (else 412). `*`: if the order
        /// exists (else 412). Absent: whatever its version.
        #[oai(name = "If-Match", validator(min_length = 1))]
        if_match: Header<Option<String>>,
    ) -> Result<OrderDeleted, OperationError<DeleteErrors>> {
        app::orders::delete(
            &state,
            &caller.0,
            &id,
            self::if_match(if_match.0.as_deref()),
        )
        .await?;
        Ok(OrderDeleted::NoContent)
    }
}
