//! SQL for free slots: the times of the orders near a window, which are all that decide its
//! free slots (see [`crate::domain::SlotWindow::free_slots`]).

use super::{Reader, StoreError};
use crate::domain::{SlotWindow, Timestamp};

/// The times of the orders that block some instant of the window `[$1, $2]`: those less than
/// 3 hours (the domain's `ORDER_CLEARANCE`) from it, in time order. A range on the leading
/// column of the `(scheduled_at, id)` index, so however many orders there are, only the few
/// near the window are read. Public so that tests can check its plan.
pub const ORDERS_NEAR_WINDOW: &str = "SELECT scheduled_at FROM orders
     WHERE scheduled_at > $1::timestamptz - interval '3 hours'
       AND scheduled_at < $2::timestamptz + interval '3 hours'
     ORDER BY scheduled_at";

/// The times of the orders near `window`, earliest first.
#[tracing::instrument(name = "free_slots.orders_near", skip_all, fields(from = %window.from(), to = %window.to()))]
pub async fn orders_near(
    reader: &Reader,
    window: &SlotWindow,
) -> Result<Vec<Timestamp>, StoreError> {
    // At most a few hundred rows: a window is at most 31 days, with orders 3 hours apart.
    let rows = reader
        .query(
            ORDERS_NEAR_WINDOW,
            &[&window.from().as_datetime(), &window.to().as_datetime()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            Timestamp::from_utc(row.get("scheduled_at"))
                .expect("stored timestamps are within range")
        })
        .collect())
}
