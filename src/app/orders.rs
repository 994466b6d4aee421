//! What the order operations decide: which error wins, what is looked up, in which order.

use deadpool_postgres::GenericClient;

use super::{
    AppError, AppState, Precondition, Resource,
    authentication::Caller,
    idempotency::{self, Answer, Fingerprint, TransactionalCreate},
};
use crate::{
    domain::{
        IdempotencyKey, Money, OrderCursor, OrderDraft, OrderId, OrderRecord, OrderRevision,
        ServiceId, StoredAnswer, Timestamp,
    },
    storage::{self, StoreError, orders::OrderFilter},
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

impl OrderRequest {
    /// What identifies this request to an `Idempotency-Key`: its fields as parsed, so that
    /// `100` and `100.00`, or two spellings of one instant, are the same request.
    fn fingerprint(&self) -> Fingerprint {
        let scheduled_at = self.scheduled_at.to_string();
        let total_fee = self.total_fee.to_string();
        let mut parts = vec![scheduled_at.as_str(), total_fee.as_str()];
        parts.extend(self.service_ids.iter().map(String::as_str));
        Fingerprint::of("order_create", &parts)
    }
}

/// Creates an order on behalf of `caller`. With an `idempotency_key`, a retry of the same
/// request gets the first answer (as `render` rendered it) instead; see [`idempotency`].
pub async fn create(
    state: &AppState,
    caller: &Caller,
    request: OrderRequest,
    idempotency_key: Option<&IdempotencyKey>,
    render: impl Fn(&Result<OrderRecord, AppError>) -> StoredAnswer + Sync,
) -> Result<Answer<OrderRecord>, AppError> {
    state
        .bounded(async {
            let Some(key) = idempotency_key else {
                let draft = draft_from_pool(state, request, None).await?;
                let order = storage::orders::insert(&state.pool, &draft, &caller.name).await?;
                return Ok(Answer::Fresh(order));
            };
            let fingerprint = request.fingerprint();
            // The usual request, whose services are all ids and whose key is new, is one
            // statement that claims the key, creates the order and keeps it. What that cannot
            // decide alone, it leaves undone for the transaction that decides everything.
            // (A request it refuses before the write is refused there too, after the claim.)
            if let Ok(Some(draft)) = parsed_draft(&request) {
                let kept = storage::orders::insert_kept(
                    &state.pool,
                    &draft,
                    &caller.name,
                    caller.key_id,
                    key.as_str(),
                    fingerprint.as_bytes(),
                )
                .await;
                match kept {
                    Ok(Some(order)) => return Ok(Answer::Fresh(order)),
                    Ok(None) => {}
                    Err(error) if error.is_transient() => {}
                    Err(error) => return Err(error.into()),
                }
            }
            let create = NewOrder {
                request: &request,
                actor: &caller.name,
            };
            idempotency::create_once(state, caller, key, &fingerprint, &create, render).await
        })
        .await
}

/// An order to create in the transaction that keeps the create's answer.
struct NewOrder<'a> {
    request: &'a OrderRequest,
    actor: &'a str,
}

impl TransactionalCreate for NewOrder<'_> {
    type Record = OrderRecord;

    async fn write(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
    ) -> Result<OrderRecord, AppError> {
        let draft = draft(transaction, self.request.clone(), None).await?;
        Ok(storage::orders::insert_in(transaction, &draft, self.actor).await?)
    }

    fn kept_order(order: OrderRecord) -> Option<OrderRecord> {
        Some(order)
    }
}

/// Reads a page of orders, handing each to `each` in order (see [`storage::orders::list`]);
/// returns where the next page starts after, if there is one.
pub async fn list(
    state: &AppState,
    query: OrderQuery,
    each: impl FnMut(OrderRecord) + Send,
) -> Result<Option<OrderCursor>, AppError> {
    state
        .bounded(async {
            let service_id = match query.service_id.as_deref().map(ServiceId::parse) {
                None => None,
                Some(Some(id)) => Some(id),
                // No service has such an id, so no order books it.
                Some(None) => return Ok(None),
            };
            let filter = OrderFilter {
                from: query.from,
                to: query.to,
                service_id,
            };
            Ok(
                storage::orders::list(&state.reader, &filter, query.after, query.limit, each)
                    .await?,
            )
        })
        .await
}

pub async fn view(state: &AppState, id: &str) -> Result<OrderRecord, AppError> {
    state
        .bounded(async {
            storage::orders::fetch(&state.reader, order_id(id)?)
                .await
                .map_err(AppError::on(Resource::Order, id))
        })
        .await
}

/// Replaces an order on behalf of `caller`.
pub async fn replace(
    state: &AppState,
    caller: &Caller,
    id: &str,
    precondition: Precondition<OrderRevision>,
    request: OrderRequest,
) -> Result<OrderRecord, AppError> {
    state
        .bounded(async {
            let order =
                OrderId::parse(id).ok_or_else(|| precondition.missing(Resource::Order, id))?;
            let draft = draft_from_pool(state, request, Some((order, id, &precondition))).await?;
            storage::orders::replace(
                &state.pool,
                order,
                &draft,
                precondition.revisions(),
                &caller.name,
            )
            .await
            .map_err(precondition.on(Resource::Order, id))
        })
        .await
}

/// Deletes an order on behalf of `caller`.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    id: &str,
    precondition: Precondition<OrderRevision>,
) -> Result<(), AppError> {
    state
        .bounded(async {
            let order =
                OrderId::parse(id).ok_or_else(|| precondition.missing(Resource::Order, id))?;
            storage::orders::delete(&state.pool, order, precondition.revisions(), &caller.name)
                .await
                .map_err(precondition.on(Resource::Order, id))
        })
        .await
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
    client: &impl GenericClient,
    request: OrderRequest,
    replacing: Option<(OrderId, &str, &Precondition<OrderRevision>)>,
) -> Result<OrderDraft, AppError> {
    match parsed_draft(&request)? {
        Some(draft) => Ok(draft),
        None => refuse_unparseable(client, request, replacing).await,
    }
}

/// [`draft`], with a connection from the pool only when the answer needs the database: the
/// usual request, whose ids are all ids, needs none.
async fn draft_from_pool(
    state: &AppState,
    request: OrderRequest,
    replacing: Option<(OrderId, &str, &Precondition<OrderRevision>)>,
) -> Result<OrderDraft, AppError> {
    if let Some(draft) = parsed_draft(&request)? {
        return Ok(draft);
    }
    let client = state.pool.get().await.map_err(StoreError::from)?;
    refuse_unparseable(&client, request, replacing).await
}

/// The draft, when every service id in `request` is an id (`None` when one is not), or the
/// rule of its own the list of services breaks.
fn parsed_draft(request: &OrderRequest) -> Result<Option<OrderDraft>, AppError> {
    OrderDraft::check_services(&request.service_ids).map_err(AppError::InvalidServices)?;
    let service_ids: Vec<ServiceId> = request
        .service_ids
        .iter()
        .filter_map(|id| ServiceId::parse(id))
        .collect();
    if service_ids.len() < request.service_ids.len() {
        return Ok(None);
    }
    OrderDraft::new(request.scheduled_at, request.total_fee, service_ids)
        .map(Some)
        .map_err(AppError::InvalidServices)
}

/// Why a request naming a service id that is no id at all is refused (always an error),
/// asked in the order the write would have met the answers (see [`draft`]).
async fn refuse_unparseable(
    client: &impl GenericClient,
    request: OrderRequest,
    replacing: Option<(OrderId, &str, &Precondition<OrderRevision>)>,
) -> Result<OrderDraft, AppError> {
    let service_ids: Vec<ServiceId> = request
        .service_ids
        .iter()
        .filter_map(|id| ServiceId::parse(id))
        .collect();
    let except = replacing.map(|(order, _, _)| order);
    if let Some((order, raw_id, precondition)) = replacing {
        storage::orders::check_revision(client, order, precondition.revisions())
            .await
            .map_err(precondition.on(Resource::Order, raw_id))?;
    }
    let conflict = storage::orders::conflicting_order(client, request.scheduled_at, except).await?;
    if conflict.is_some() {
        return Err(AppError::OrderTimeConflict {
            conflicting_order_id: conflict,
        });
    }
    // Report the ids that are no ids together with any well-formed one that names no service.
    let missing = storage::services::find_missing(client, &service_ids).await?;
    let unknown = request
        .service_ids
        .into_iter()
        .filter(|raw| ServiceId::parse(raw).is_none_or(|id| missing.contains(&id)))
        .collect();
    Err(AppError::UnknownServices(unknown))
}
