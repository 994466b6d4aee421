//! Amounts of money, exact to the cent.

use std::{fmt, str::FromStr};

use rust_decimal::Decimal;

/// A fee in currency units: 0 to 1,000,000,000 with at most two decimal places.
///
/// Held as a decimal, never as binary floating point, so 19.99 stays 19.99 from the request
/// to the database and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a number")]
    NotANumber,
    #[error("must not be negative")]
    Negative,
    #[error("must be at most 1000000000")]
    TooLarge,
    #[error("at most 2 decimal places")]
    TooPrecise,
}

impl Money {
    pub const MAX: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

    /// Reads the exact decimal text of a JSON number (`19.99`, `100`, `1.5e2`).
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let amount = if text.contains(['e', 'E']) {
            Decimal::from_scientific(text)
        } else {
            Decimal::from_str_exact(text)
        }
        .map_err(|_| Self::classify_unrepresentable(text))?;
        Self::from_decimal(amount)
    }

    /// Says what is wrong with a number too large or too precise for a decimal to hold. The
    /// float is used only to tell which; no amount is ever computed with it.
    fn classify_unrepresentable(text: &str) -> MoneyError {
        let looks_numeric = text
            .trim_start_matches('-')
            .starts_with(|c: char| c.is_ascii_digit());
        match text.parse::<f64>() {
            Err(_) => MoneyError::NotANumber,
            Ok(_) if !looks_numeric => MoneyError::NotANumber,
            Ok(value) if value < 0.0 => MoneyError::Negative,
            Ok(value) if value > 1_000_000_000.0 => MoneyError::TooLarge,
            // In range but with more digits than a decimal holds (`1e-400`, 30 decimals).
            Ok(_) => MoneyError::TooPrecise,
        }
    }

    /// Checks an amount already held as a decimal, such as one read from the database.
    pub fn from_decimal(amount: Decimal) -> Result<Self, MoneyError> {
        // `-0` is zero; anything else below zero is refused.
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        if amount > Self::MAX {
            return Err(MoneyError::TooLarge);
        }
        // `1.50` and `1.5` are the same amount: judge the precision on the normalised value.
        let amount = amount.normalize();
        if amount.scale() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        Ok(Self(amount.abs()))
    }

    pub fn as_decimal(&self) -> Decimal {
        self.0
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Money {
    /// The shortest exact form: `100`, `19.99`, `0.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.normalize().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_survive_exactly() {
        assert_eq!(Money::parse("19.99").unwrap().to_string(), "19.99");
        assert_eq!(Money::parse("0.1").unwrap().to_string(), "0.1");
        assert_eq!(Money::parse("100").unwrap().to_string(), "100");
    }

    #[test]
    fn trailing_zeros_and_exponents_are_the_same_amount() {
        assert_eq!(Money::parse("1.50").unwrap(), Money::parse("1.5").unwrap());
        assert_eq!(Money::parse("1.5e2").unwrap().to_string(), "150");
        assert_eq!(Money::parse("1999E-2").unwrap().to_string(), "19.99");
    }

    #[test]
    fn the_bounds_are_inclusive() {
        assert_eq!(Money::parse("0").unwrap().to_string(), "0");
        assert_eq!(Money::parse("-0").unwrap().to_string(), "0");
        assert_eq!(
            Money::parse("1000000000").unwrap().to_string(),
            "1000000000"
        );
        assert_eq!(Money::parse("1000000000.01"), Err(MoneyError::TooLarge));
    }

    #[test]
    fn out_of_rule_amounts_name_the_rule() {
        assert_eq!(Money::parse("-0.01"), Err(MoneyError::Negative));
        assert_eq!(Money::parse("19.999"), Err(MoneyError::TooPrecise));
        assert_eq!(Money::parse("1e400"), Err(MoneyError::TooLarge));
        assert_eq!(
            Money::parse("99999999999999999999999999999999999"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Money::parse("1e-400"), Err(MoneyError::TooPrecise));
        assert_eq!(
            Money::parse("0.0000000000000000000000000000001"),
            Err(MoneyError::TooPrecise)
        );
        assert_eq!(Money::parse("-1e400"), Err(MoneyError::Negative));
        assert_eq!(Money::parse("abc"), Err(MoneyError::NotANumber));
        assert_eq!(Money::parse("NaN"), Err(MoneyError::NotANumber));
        assert_eq!(Money::parse("inf"), Err(MoneyError::NotANumber));
    }
}
