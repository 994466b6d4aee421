//! What the service operations decide.

use super::{
    AppError, AppState, Precondition, Resource,
    authentication::Caller,
    idempotency::{self, Answer, Fingerprint, TransactionalCreate},
};
use crate::{
    domain::{IdempotencyKey, Page, ServiceId, ServiceName, ServiceRecord, StoredAnswer},
    storage::{self, StoreError},
};

/// Creates a service on behalf of `caller`. With an `idempotency_key`, a retry of the same
/// request gets the first answer (as `render` rendered it) instead; see [`idempotency`].
pub async fn create(
    state: &AppState,
    caller: &Caller,
    name: &ServiceName,
    idempotency_key: Option<&IdempotencyKey>,
    render: impl Fn(&Result<ServiceRecord, AppError>) -> StoredAnswer + Sync,
) -> Result<Answer<ServiceRecord>, AppError> {
    state
        .bounded(async {
            let Some(key) = idempotency_key else {
                let client = state.pool.get().await.map_err(StoreError::from)?;
                let service = storage::services::insert(&client, name, &caller.name).await?;
                return Ok(Answer::Fresh(service));
            };
            let fingerprint = Fingerprint::of("service_create", &[name.as_str()]);
            let create = NewService {
                name,
                actor: &caller.name,
            };
            idempotency::create_once(state, caller, key, &fingerprint, &create, render).await
        })
        .await
}

/// A service to create in the transaction that keeps the create's answer.
struct NewService<'a> {
    name: &'a ServiceName,
    actor: &'a str,
}

impl TransactionalCreate for NewService<'_> {
    type Record = ServiceRecord;

    async fn write(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
    ) -> Result<ServiceRecord, AppError> {
        Ok(storage::services::insert(transaction, self.name, self.actor).await?)
    }
}

pub async fn list(
    state: &AppState,
    after: Option<ServiceId>,
    limit: usize,
) -> Result<Page<ServiceRecord, ServiceId>, AppError> {
    state
        .bounded(async { Ok(storage::services::list(&state.reader, after, limit).await?) })
        .await
}

pub async fn view(state: &AppState, id: &str) -> Result<ServiceRecord, AppError> {
    state
        .bounded(async {
            storage::services::fetch(&state.reader, service_id(id)?)
                .await
                .map_err(AppError::on(Resource::Service, id))
        })
        .await
}

/// Renames a service on behalf of `caller`. Orders that book it show the new name from now
/// on, and their ETags change with it.
pub async fn rename(
    state: &AppState,
    caller: &Caller,
    id: &str,
    precondition: Precondition<i64>,
    name: &ServiceName,
) -> Result<ServiceRecord, AppError> {
    state
        .bounded(async {
            let service =
                ServiceId::parse(id).ok_or_else(|| precondition.missing(Resource::Service, id))?;
            storage::services::rename(
                &state.pool,
                service,
                name,
                precondition.revisions(),
                &caller.name,
            )
            .await
            .map_err(precondition.on(Resource::Service, id))
        })
        .await
}

/// Deletes a service on behalf of `caller`.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    id: &str,
    precondition: Precondition<i64>,
) -> Result<(), AppError> {
    state
        .bounded(async {
            let service =
                ServiceId::parse(id).ok_or_else(|| precondition.missing(Resource::Service, id))?;
            storage::services::delete(&state.pool, service, precondition.revisions(), &caller.name)
                .await
                .map_err(precondition.on(Resource::Service, id))
        })
        .await
}

/// Parses a path id; an id that cannot be one names no service.
fn service_id(id: &str) -> Result<ServiceId, AppError> {
    ServiceId::parse(id).ok_or_else(|| AppError::not_found(Resource::Service, id))
}
