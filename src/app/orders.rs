//! What the order operations decide: which error wins, what is looked up, in which order.

use super::{AppError, AppState, Precondition, Resource};
pub use crate::storage::orders::{OrderCursor, OrderFilter, OrderRecord, OrderRevision};
use crate::{
    domain::{OrderDraft, OrderId, OrderRequest, ServiceId},
    storage::{self, Page},
};

/// Which page of which orders a caller wants, as parsed from the request.
pub struct OrderQuery {
    pub filter: OrderFilter,
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
    let mut filter = query.filter;
    if let Some(raw) = &query.service_id {
        match ServiceId::parse(raw) {
            Some(id) => filter.service_id = Some(id),
            // No service has such an id, so no order books it.
            None => return Ok(Page::empty()),
        }
    }
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
/// replace targets (its id, as written, and the precondition), so that a missing order is
/// reported before its body's services: the order is what the request is about.
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
    if service_ids.len() < request.service_ids.len() {
        // An id the server never issued (`"abc"`, `"-1"`) names no service, so the write
        // cannot succeed; say why without trying it.
        if let Some((order, raw_id, precondition)) = replacing
            && !storage::orders::exists(&state.pool, order).await?
        {
            return Err(precondition.missing(Resource::Order, raw_id));
        }
        // Report it together with any well-formed id that names no service either.
        let missing = storage::services::find_missing(&state.pool, &service_ids).await?;
        let unknown = request
            .service_ids
            .into_iter()
            .filter(|raw| ServiceId::parse(raw).is_none_or(|id| missing.contains(&id)))
            .collect();
        return Err(AppError::UnknownServices(unknown));
    }
    OrderDraft::new(request.scheduled_at, request.total_fee, service_ids)
        .map_err(AppError::InvalidServices)
}
