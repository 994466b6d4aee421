//! What the service operations decide.

use super::{AppError, AppState, Precondition, Resource};
pub use crate::storage::services::ServiceRecord;
use crate::{
    domain::{ServiceId, ServiceName},
    storage::{self, Page},
};

pub async fn create(state: &AppState, name: &ServiceName) -> Result<ServiceRecord, AppError> {
    Ok(storage::services::insert(&state.pool, name).await?)
}

pub async fn list(
    state: &AppState,
    after: Option<ServiceId>,
    limit: usize,
) -> Result<Page<ServiceRecord, ServiceId>, AppError> {
    Ok(storage::services::list(&state.pool, after, limit).await?)
}

pub async fn view(state: &AppState, id: &str) -> Result<ServiceRecord, AppError> {
    storage::services::fetch(&state.pool, service_id(id)?)
        .await
        .map_err(AppError::on(Resource::Service, id))
}

/// Renames a service. Orders that book it show the new name from now on, and their ETags
/// change with it.
pub async fn rename(
    state: &AppState,
    id: &str,
    precondition: Precondition<i64>,
    name: &ServiceName,
) -> Result<ServiceRecord, AppError> {
    let service =
        ServiceId::parse(id).ok_or_else(|| precondition.missing(Resource::Service, id))?;
    storage::services::rename(&state.pool, service, name, precondition.revisions())
        .await
        .map_err(precondition.on(Resource::Service, id))
}

pub async fn delete(
    state: &AppState,
    id: &str,
    precondition: Precondition<i64>,
) -> Result<(), AppError> {
    let service =
        ServiceId::parse(id).ok_or_else(|| precondition.missing(Resource::Service, id))?;
    storage::services::delete(&state.pool, service, precondition.revisions())
        .await
        .map_err(precondition.on(Resource::Service, id))
}

/// Parses a path id; an id that cannot be one names no service.
fn service_id(id: &str) -> Result<ServiceId, AppError> {
    ServiceId::parse(id).ok_or_else(|| AppError::not_found(Resource::Service, id))
}
