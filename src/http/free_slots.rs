//! `/free-slots`: when a new order could be scheduled, within a window of time.

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Query, types::Example};
use serde::Serialize;

use super::{
    ApiTags,
    auth::ApiKey,
    json_body::JsonBody,
    problem::{
        ApiError, ErrorCode,
        documentation::{OperationError, operation_codes},
    },
};
use crate::{
    app,
    app::AppState,
    domain::{FreeSlot, SlotWindow, Timestamp},
};

/// A stretch of time at which a new order could be scheduled, both ends included.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename = "FreeSlot")]
pub struct FreeSlotView {
    /// The first free instant.
    pub start: Timestamp,
    /// The last free instant: equal to `start` when the slot is a single instant.
    pub end: Timestamp,
}

/// The free slots of a window, in time order.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct FreeSlotList {
    /// Each as long as it can be: between two slots lies time that an order blocks. Empty when
    /// the whole window is blocked.
    pub free_slots: Vec<FreeSlotView>,
}

impl From<FreeSlot> for FreeSlotView {
    fn from(slot: FreeSlot) -> Self {
        Self {
            start: slot.start,
            end: slot.end,
        }
    }
}

/// The example window: the day of the sample orders.
fn example_from() -> Timestamp {
    Timestamp::parse("2022-11-01T00:00:00.000Z").expect("valid example")
}

fn example_to() -> Timestamp {
    Timestamp::parse("2022-11-01T23:59:59.999Z").expect("valid example")
}

impl Example for FreeSlotList {
    /// The free slots of the example window with the sample orders booked, computed by the
    /// same rule as every answer, so the example cannot disagree with the service.
    fn example() -> Self {
        let window = SlotWindow::new(example_from(), example_to()).expect("valid example");
        let sample_orders = [
            "2022-11-01T11:11:11.111Z",
            "2022-11-01T14:11:11.111Z",
            "2022-11-01T17:11:11.111Z",
        ]
        .map(|text| Timestamp::parse(text).expect("valid example"));
        Self {
            free_slots: window
                .free_slots(&sample_orders)
                .into_iter()
                .map(FreeSlotView::from)
                .collect(),
        }
    }
}

#[derive(ApiResponse)]
enum FreeSlotsListed {
    /// The free slots of the window.
    #[oai(status = 200)]
    Ok(JsonBody<FreeSlotList>),
}

operation_codes! {
    FreeSlotsErrors = [
        Unauthenticated, Forbidden, RateLimited, InvalidParameter, Internal, DatabaseUnavailable,
        DatabaseTimeout, Overloaded,
    ];
}

/// The free-slots operation. Stateless, like every API type (see [`super`]).
pub struct FreeSlotsApi;

#[OpenApi(tag = "ApiTags::Orders")]
impl FreeSlotsApi {
    /// List free slots
    ///
    /// The stretches of time within `[from, to]` at which a new order could be scheduled now:
    /// every instant at least 3 hours from every order. Each slot includes both its ends, and
    /// may be a single instant (`start` equal to `end`). Advice, not a reservation: a create at
    /// a free slot can still be refused with 409 `ORDER_TIME_CONFLICT` when another client
    /// books near it first.
    #[oai(path = "/free-slots", method = "get", operation_id = "free_slots_list")]
    async fn free_slots_list(
        &self,
        _caller: ApiKey,
        state: Data<&AppState>,
        /// The window's first instant, included.
        #[oai(example = "example_from")]
        from: Query<Timestamp>,
        /// The window's last instant, included: not earlier than `from`, and at most 31 days
        /// after it (else 400).
        #[oai(example = "example_to")]
        to: Query<Timestamp>,
    ) -> Result<FreeSlotsListed, OperationError<FreeSlotsErrors>> {
        let window = SlotWindow::new(from.0, to.0).map_err(|error| {
            ApiError::with_detail(
                ErrorCode::InvalidParameter,
                format!("{}: {error}", error.parameter()),
            )
        })?;
        let slots = app::free_slots::list(&state, window).await?;
        Ok(FreeSlotsListed::Ok(JsonBody::new(&FreeSlotList {
            free_slots: slots.into_iter().map(FreeSlotView::from).collect(),
        })))
    }
}
