//! Reading the change feed (see [`crate::storage::events`] for how it is written and why its
//! order holds).

use super::{AppError, AppState};
use crate::storage;
pub use crate::storage::events::{
    EventRecord, EventSubject, EventType, FeedPage, FeedPosition, FeedStart,
};

/// The events a caller may be given now after `start`, at most `limit`; `None` when `start`
/// is no position the feed ever handed out.
pub async fn read(
    state: &AppState,
    start: FeedStart,
    limit: usize,
) -> Result<Option<FeedPage>, AppError> {
    state
        .bounded(async { Ok(storage::events::read(&state.pool, start, limit).await?) })
        .await
}
