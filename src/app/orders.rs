//! What the order operations decide: which error wins, what is looked up, in which order.

use super::{AppError, AppState, Precondition, Resource};
pub use crate::storage::orders::{OrderCursor, OrderRecord, OrderRevision};
use crate::{
    domain::{Money, OrderDraft, OrderId, ServiceId, Timestamp},
    storage::{self, Page, orders::OrderFilter},
};

/// An order as a client asked for it, before its services are looked up: its services are
/// ids exactly as the client wrote them, which may name no service at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub scheduled_at: Timestamp,
    pub total_fee: Money,
    pub service_ids: Vec<String>,
}

/// Which page of which orders a caller wants, as parsed from the request.
pub struct OrderQuery {
    /// Scheduled at or after.
    pub from: Option<Timestamp>,
    /// Scheduled strictly before.
    pub to: Option<Timestamp>,
    /// A service id as the client wrote it: only orders that book it.
    pub service_id: Option<String>,
    pub after: Option<OrderCursor>,
    pub limit: usize,
}

pub async fn create(state: &AppState, request: OrderRequest) -> Result<OrderRecord, AppError> {
    let draft = draft(state, request, None).await?;
    Ok(storage::orders::insert(&state.pool, &draft).await?)
}

pub async fn list(
    state: &AppState,
    query: OrderQuery,
) -> Result<Page<OrderRecord, OrderCursor>, AppError> {
    let service_id = match query.service_id.as_deref().map(ServiceId::parse) {
        None => None,
        Some(Some(id)) => Some(id),
        // No service has such an id, so no order books it.
        Some(None) => return Ok(Page::empty()),
    };
    let filter = OrderFilter {
        from: query.from,
        to: query.to,
        service_id,
    };
    Ok(storage::orders::list(&state.pool, &filter, query.after, query.limit).await?)
}

pub async fn view(state: &AppState, id: &str) -> Result<OrderRecord, AppError> {
    storage::orders::fetch(&state.pool, order_id(id)?)
        .await
        .map_err(AppError::on(Resource::Order, id))
}

pub async fn replace(
    state: &AppState,
    id: &str,
    precondition: Precondition<OrderRevision>,
    request: OrderRequest,
) -> Result<OrderRecord, AppError> {
    let order = OrderId::parse(id).ok_or_else(|| precondition.missing(Resource::Order, id))?;
    let draft = draft(state, request, Some((order, id, &precondition))).await?;
    storage::orders::replace(&state.pool, order, &draft, precondition.revisions())
        .await
        .map_err(precondition.on(Resource::Order, id))
}

pub async fn delete(
    state: &AppState,
    id: &str,
    precondition: Precondition<OrderRevision>,
) -> Result<(), AppError> {
    let order = OrderId::parse(id).ok_or_else(|| precondition.missing(Resource::Order, id))?;
    storage::orders::delete(&state.pool, order, precondition.revisions())
        .await
        .map_err(precondition.on(Resource::Order, id))
}

/// Parses a path id; an id that cannot be one names no order.
fn order_id(id: &str) -> Result<OrderId, AppError> {
    OrderId::parse(id).ok_or_else(|| AppError::not_found(Resource::Order, id))
}

/// The draft `request` asks for, or why it cannot be one. `replacing` names the order a
/// replace targets (its id, as written, and the precondition).
///
/// When the client's errors are several, the one reported is the one the write would have
/// met first: the order is missing or changed (404, 412), then its time clashes (409), then
/// a service does not exist (422). A write reports them so of itself; an id that is no id at
/// all (`"abc"`) cannot reach the write, so the same questions are asked here, in that order.
async fn draft(
    state: &AppState,
    request: OrderRequest,
    replacing: Option<(OrderId, &str, &Precondition<OrderRevision>)>,
) -> Result<OrderDraft, AppError> {
    OrderDraft::check_services(&request.service_ids).map_err(AppError::InvalidServices)?;
    let service_ids: Vec<ServiceId> = request
        .service_ids
        .iter()
        .filter_map(|id| ServiceId::parse(id))
        .collect();
    if service_ids.len() == request.service_ids.len() {
        return OrderDraft::new(request.scheduled_at, request.total_fee, service_ids)
            .map_err(AppError::InvalidServices);
    }
    let except = replacing.map(|(order, _, _)| order);
    if let Some((order, raw_id, precondition)) = replacing {
        storage::orders::check_revision(&state.pool, order, precondition.revisions())
            .await
            .map_err(precondition.on(Resource::Order, raw_id))?;
    }
    let conflict =
        storage::orders::conflicting_order(&state.pool, request.scheduled_at, except).await?;
    if conflict.is_some() {
        return Err(AppError::OrderTimeConflict {
            conflicting_order_id: conflict,
        });
    }
    // Report the ids that are no ids together with any well-formed one that names no service.
    let missing = storage::services::find_missing(&state.pool, &service_ids).await?;
    let unknown = request
        .service_ids
        .into_iter()
        .filter(|raw| ServiceId::parse(raw).is_none_or(|id| missing.contains(&id)))
        .collect();
    Err(AppError::UnknownServices(unknown))
}
