//! What the free-slots operation looks up: the orders near the window, once, and the gaps
//! the domain finds between them.
//!
//! The answer is advice, not a reservation: nothing is held, and another client can book a
//! slot between this answer and a create, which the 3-hour rule then refuses (409).

use super::{AppError, AppState};
use crate::{
    domain::{FreeSlot, SlotWindow},
    storage,
};

/// The free slots of `window` as the calendar stands now.
pub async fn list(state: &AppState, window: SlotWindow) -> Result<Vec<FreeSlot>, AppError> {
    state
        .bounded(async {
            let orders = storage::free_slots::orders_near(&state.reader, &window).await?;
            Ok(window.free_slots(&orders))
        })
        .await
}
