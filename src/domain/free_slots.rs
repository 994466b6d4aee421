//! Free slots: the stretches of a window of time at which a new order could be scheduled,
//! given the orders already booked.
//!
//! An order at `t` keeps every other order out of the open interval `(t - 3 h, t + 3 h)` (the
//! 3-hour rule: two orders less than 3 hours apart clash; exactly 3 hours apart is fine). What
//! is left of a window, both ends included, is its free slots. The rule is computed here, from
//! the order times storage reads; nothing here reads them.

use chrono::{DateTime, Duration, Utc};

use super::Timestamp;

/// How far an order keeps other orders away, each side: the 3-hour rule.
pub const ORDER_CLEARANCE: Duration = Duration::hours(3);

/// The longest window one request may ask about, so one answer stays small and its query
/// reads a bounded stretch of the calendar.
pub const MAX_WINDOW_DAYS: i64 = 31;

/// A window of time, both ends included: `from` is not after `to`, and they are at most
/// [`MAX_WINDOW_DAYS`] days apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotWindow {
    from: Timestamp,
    to: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotWindowError {
    #[error("must not be later than to")]
    Reversed,
    #[error("must be at most {MAX_WINDOW_DAYS} days after from")]
    TooLong,
}

impl SlotWindowError {
    /// The request parameter the error is about.
    pub fn parameter(&self) -> &'static str {
        match self {
            Self::Reversed => "from",
            Self::TooLong => "to",
        }
    }
}

/// A stretch of free time, both ends included; a single instant when `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSlot {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl SlotWindow {
    pub fn new(from: Timestamp, to: Timestamp) -> Result<Self, SlotWindowError> {
        if from > to {
            return Err(SlotWindowError::Reversed);
        }
        if to.as_datetime() - from.as_datetime() > Duration::days(MAX_WINDOW_DAYS) {
            return Err(SlotWindowError::TooLong);
        }
        Ok(Self { from, to })
    }

    pub fn from(&self) -> Timestamp {
        self.from
    }

    pub fn to(&self) -> Timestamp {
        self.to
    }

    /// The free slots of the window, in time order, given the times of the orders booked
    /// (sorted, earliest first). Orders far from the window change nothing, so the list need
    /// only hold those less than [`ORDER_CLEARANCE`] from it; any others may be there too.
    pub fn free_slots(&self, sorted_orders: &[Timestamp]) -> Vec<FreeSlot> {
        let (from, to) = (self.from.as_datetime(), self.to.as_datetime());
        let mut slots = Vec::new();
        // The earliest instant no order seen so far blocks. Every order after it in the list
        // is at least as late, so it cannot block anything before its own `t - 3 h`.
        let mut free_from = from;
        for order in sorted_orders {
            let order = order.as_datetime();
            let blocked_from = order - ORDER_CLEARANCE;
            let end = blocked_from.min(to);
            if free_from <= end {
                slots.push(slot(free_from, end));
            }
            free_from = free_from.max(order + ORDER_CLEARANCE);
            if free_from > to {
                return slots;
            }
        }
        slots.push(slot(free_from, to));
        slots
    }
}

/// A slot whose ends lie within a window, which are as valid as the window's own.
fn slot(start: DateTime<Utc>, end: DateTime<Utc>) -> FreeSlot {
    let within = |instant| Timestamp::from_utc(instant).expect("inside a valid window");
    FreeSlot {
        start: within(start),
        end: within(end),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn window(from: &str, to: &str) -> SlotWindow {
        SlotWindow::new(at(from), at(to)).unwrap()
    }

    fn slots(window: &SlotWindow, orders: &[&str]) -> Vec<(String, String)> {
        let orders: Vec<Timestamp> = orders.iter().map(|text| at(text)).collect();
        window
            .free_slots(&orders)
            .into_iter()
            .map(|slot| (slot.start.to_string(), slot.end.to_string()))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(start, end)| (at(start).to_string(), at(end).to_string()))
            .collect()
    }

    #[test]
    fn orders_at_midnight_and_eight_leave_three_to_five_and_eleven_to_noon() {
        let day = window("2030-01-01T00:00:00Z", "2030-01-01T12:00:00Z");
        assert_eq!(
            slots(&day, &["2030-01-01T00:00:00Z", "2030-01-01T08:00:00Z"]),
            pairs(&[
                ("2030-01-01T03:00:00Z", "2030-01-01T05:00:00Z"),
                ("2030-01-01T11:00:00Z", "2030-01-01T12:00:00Z"),
            ])
        );
    }

    #[test]
    fn orders_six_hours_apart_leave_the_one_instant_between() {
        let day = window("2030-01-01T01:00:00Z", "2030-01-01T11:00:00Z");
        assert_eq!(
            slots(&day, &["2030-01-01T03:00:00Z", "2030-01-01T09:00:00Z"]),
            pairs(&[("2030-01-01T06:00:00Z", "2030-01-01T06:00:00Z")])
        );
    }

    #[test]
    fn orders_three_hours_apart_leave_nothing_between() {
        let day = window("2030-01-01T01:00:00Z", "2030-01-01T11:00:00Z");
        assert_eq!(
            slots(&day, &["2030-01-01T03:00:00Z", "2030-01-01T06:00:00Z"]),
            pairs(&[("2030-01-01T09:00:00Z", "2030-01-01T11:00:00Z")])
        );
    }

    #[test]
    fn an_empty_calendar_leaves_the_whole_window() {
        let month = window("2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z");
        assert_eq!(
            slots(&month, &[]),
            pairs(&[("2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z")])
        );
    }

    #[test]
    fn an_order_exactly_three_hours_outside_the_window_leaves_its_end_free() {
        let day = window("2030-01-01T06:00:00Z", "2030-01-01T12:00:00Z");
        assert_eq!(
            slots(&day, &["2030-01-01T03:00:00Z", "2030-01-01T15:00:00Z"]),
            pairs(&[("2030-01-01T06:00:00Z", "2030-01-01T12:00:00Z")])
        );
        assert_eq!(
            slots(
                &day,
                &["2030-01-01T03:00:00.001Z", "2030-01-01T14:59:59.999Z"]
            ),
            pairs(&[("2030-01-01T06:00:00.001Z", "2030-01-01T11:59:59.999Z")])
        );
    }

    #[test]
    fn a_fully_booked_window_has_no_free_slot() {
        let day = window("2030-01-01T00:00:00Z", "2030-01-01T12:00:00Z");
        assert_eq!(
            slots(
                &day,
                &[
                    "2030-01-01T01:00:00Z",
                    "2030-01-01T05:59:59.999Z",
                    "2030-01-01T10:59:59.998Z",
                ]
            ),
            pairs(&[])
        );
    }

    #[test]
    fn a_window_of_one_instant_is_free_or_not() {
        let instant = window("2030-01-01T06:00:00Z", "2030-01-01T06:00:00Z");
        assert_eq!(
            slots(&instant, &["2030-01-01T03:00:00Z"]),
            pairs(&[("2030-01-01T06:00:00Z", "2030-01-01T06:00:00Z")])
        );
        assert_eq!(slots(&instant, &["2030-01-01T03:00:00.001Z"]), pairs(&[]));
    }

    #[test]
    fn a_window_is_refused_reversed_or_over_thirty_one_days() {
        let from = at("2030-01-01T00:00:00Z");
        assert_eq!(
            SlotWindow::new(from, at("2029-12-31T23:59:59.999Z")),
            Err(SlotWindowError::Reversed)
        );
        assert!(SlotWindow::new(from, at("2030-02-01T00:00:00Z")).is_ok());
        assert_eq!(
            SlotWindow::new(from, at("2030-02-01T00:00:00.001Z")),
            Err(SlotWindowError::TooLong)
        );
        assert_eq!(SlotWindowError::Reversed.parameter(), "from");
        assert_eq!(SlotWindowError::TooLong.parameter(), "to");
    }

    /// Whether an order could be created at `instant`, straight from the rule: at least the
    /// clearance from every order.
    fn is_free(instant: i64, orders: &[i64], clearance: i64) -> bool {
        orders
            .iter()
            .all(|order| (instant - order).abs() >= clearance)
    }

    proptest! {
        /// On a grid of half hours, where every slot's ends lie: each instant of the window is
        /// in a slot exactly when the rule says it is free, and the slots are maximal (no two
        /// touch or overlap, so none could be longer).
        #[test]
        fn the_slots_are_exactly_the_free_instants(
            window_start in 0i64..40,
            window_length in 0i64..40,
            mut orders in proptest::collection::vec(-20i64..100, 0..8),
        ) {
            let unit = Duration::minutes(30);
            let clearance = ORDER_CLEARANCE.num_minutes() / 30;
            let base = at("2030-01-01T00:00:00Z").as_datetime();
            let instant = |n: i64| Timestamp::from_utc(base + unit * i32::try_from(n).unwrap()).unwrap();
            orders.sort_unstable();
            let window_end = window_start + window_length;
            let window = SlotWindow::new(instant(window_start), instant(window_end)).unwrap();
            let booked: Vec<Timestamp> = orders.iter().map(|&n| instant(n)).collect();
            let slots = window.free_slots(&booked);
            let in_slot = |n: i64| {
                let t = instant(n);
                slots.iter().any(|slot| slot.start <= t && t <= slot.end)
            };
            for n in window_start..=window_end {
                prop_assert_eq!(in_slot(n), is_free(n, &orders, clearance), "instant {}", n);
            }
            for slot in &slots {
                prop_assert!(slot.start <= slot.end);
            }
            for pair in slots.windows(2) {
                prop_assert!(pair[0].end.as_datetime() + unit < pair[1].start.as_datetime());
            }
        }
    }
}
