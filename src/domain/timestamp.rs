//! Points in time as the API shows them: UTC, millisecond precision.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};

/// An instant with millisecond precision, always shown in UTC with a `Z` suffix, like the
/// sample data's `2022-11-01T11:11:11.111Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("must be an RFC 3339 date-time with a UTC offset, like 2022-11-01T11:11:11.111Z")]
    NotRfc3339,
    #[error("must be a year between 0001 and 9999")]
    OutOfRange,
    #[error("must not be a leap second (:60): name the instant after it, :00 of the next minute")]
    LeapSecond,
}

impl Timestamp {
    /// Reads an RFC 3339 date-time. The offset is required: a time without one names no
    /// instant. Digits beyond the millisecond are dropped (truncated, never rounded up into
    /// the next millisecond).
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let parsed = DateTime::parse_from_rfc3339(text).map_err(|_| TimestampError::NotRfc3339)?;
        // chrono takes `:60` as the last second's second half (a nanosecond count of a second
        // or more), which would be stored and shown as :59, another instant than the one
        // written. Leap seconds are rare enough not to be worth telling real from made up.
        if chrono::Timelike::nanosecond(&parsed) >= 1_000_000_000 {
            return Err(TimestampError::LeapSecond);
        }
        let utc = parsed.with_timezone(&Utc);
        Self::from_utc(utc)
    }

    /// Wraps an instant read from the database or the clock.
    pub fn from_utc(instant: DateTime<Utc>) -> Result<Self, TimestampError> {
        use chrono::Datelike;
        // Four-digit years only: what RFC 3339 can write, and what every client can parse back.
        if !(1..=9999).contains(&instant.year()) {
            return Err(TimestampError::OutOfRange);
        }
        Ok(Self(instant.trunc_subsecs(3)))
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The API's form, `YYYY-MM-DDTHH:MM:SS.mmmZ` (a four-digit year: [`Timestamp::from_utc`]
/// allows no other), written digit by digit into a fixed buffer. Every answer shows timestamps
/// (a page of the feed, hundreds), and chrono's format strings are parsed anew on each use:
/// that took a tenth of a feed read's CPU.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.rfc3339();
        f.write_str(std::str::from_utf8(&text).expect("digits and separators are ASCII"))
    }
}

impl Timestamp {
    /// The API's form of the instant (see `Display`), as ASCII bytes.
    pub fn rfc3339(&self) -> [u8; 24] {
        use chrono::{Datelike, Timelike};
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        let instant = self.0;
        put(0, 4, instant.year().unsigned_abs());
        put(5, 2, instant.month());
        put(8, 2, instant.day());
        put(11, 2, instant.hour());
        put(14, 2, instant.minute());
        put(17, 2, instant.second());
        // Below a second: no leap second reaches here (`parse` refuses them, the database has none).
        put(20, 3, (instant.nanosecond() / 1_000_000).min(999));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn it_is_shown_as_chrono_formats_it(millis in -62_135_596_800_000_i64..253_402_300_799_999) {
            let timestamp = Timestamp::from_utc(DateTime::from_timestamp_millis(millis).unwrap()).unwrap();
            proptest::prop_assert_eq!(
                timestamp.to_string(),
                timestamp.0.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            );
        }
    }

    #[test]
    fn the_first_and_last_instants_shown_have_four_digit_years() {
        for (text, shown) in [
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999Z"),
            ("2022-11-01T11:11:11.011Z", "2022-11-01T11:11:11.011Z"),
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn a_leap_second_is_refused() {
        assert_eq!(
            Timestamp::parse("2016-12-31T23:59:60Z"),
            Err(TimestampError::LeapSecond)
        );
        assert_eq!(
            Timestamp::parse("2016-12-31T23:59:60.5+00:00"),
            Err(TimestampError::LeapSecond)
        );
        assert!(Timestamp::parse("2016-12-31T23:59:59.999Z").is_ok());
    }

    #[test]
    fn utc_input_round_trips_exactly() {
        let parsed = Timestamp::parse("2022-11-01T11:11:11.111Z").unwrap();
        assert_eq!(parsed.to_string(), "2022-11-01T11:11:11.111Z");
    }

    #[test]
    fn offsets_are_normalised_to_utc_with_milliseconds() {
        let parsed = Timestamp::parse("2022-11-01T13:11:11+02:00").unwrap();
        assert_eq!(parsed.to_string(), "2022-11-01T11:11:11.000Z");
    }

    #[test]
    fn sub_millisecond_digits_are_truncated() {
        let parsed = Timestamp::parse("2022-11-01T11:11:11.111999Z").unwrap();
        assert_eq!(parsed.to_string(), "2022-11-01T11:11:11.111Z");
    }

    #[test]
    fn a_time_without_offset_is_refused() {
        assert_eq!(
            Timestamp::parse("2022-11-01T11:11:11.111"),
            Err(TimestampError::NotRfc3339)
        );
    }

    #[test]
    fn garbage_and_impossible_dates_are_refused() {
        for text in [
            "",
            "yesterday",
            "2022-13-01T00:00:00Z",
            "2022-02-30T00:00:00Z",
        ] {
            assert_eq!(
                Timestamp::parse(text),
                Err(TimestampError::NotRfc3339),
                "{text}"
            );
        }
    }

    #[test]
    fn year_zero_is_out_of_range() {
        assert_eq!(
            Timestamp::parse("0000-06-01T00:00:00Z"),
            Err(TimestampError::OutOfRange)
        );
    }
}
