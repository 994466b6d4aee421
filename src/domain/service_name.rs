//! The name of a bookable service.

use std::fmt;

/// A service's name: trimmed, 1 to 200 characters, no control characters.
/// Uniqueness (case-insensitive) is the database's to enforce, not this type's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName(String);

pub const MAX_SERVICE_NAME_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    #[error("must not be empty or only white space")]
    Empty,
    #[error("must be at most {MAX_SERVICE_NAME_CHARS} characters")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl ServiceName {
    pub fn parse(text: &str) -> Result<Self, ServiceNameError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ServiceNameError::Empty);
        }
        if trimmed.chars().count() > MAX_SERVICE_NAME_CHARS {
            return Err(ServiceNameError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ServiceNameError::ControlCharacter);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed() {
        assert_eq!(
            ServiceName::parse("  Inspection ").unwrap().as_str(),
            "Inspection"
        );
    }

    #[test]
    fn two_hundred_characters_fit_and_one_more_does_not() {
        let longest = "é".repeat(200);
        assert_eq!(ServiceName::parse(&longest).unwrap().as_str(), longest);
        assert_eq!(
            ServiceName::parse(&"é".repeat(201)),
            Err(ServiceNameError::TooLong)
        );
    }

    #[test]
    fn blank_and_control_characters_are_refused() {
        assert_eq!(ServiceName::parse(" \t "), Err(ServiceNameError::Empty));
        assert_eq!(
            ServiceName::parse("Tes\nting"),
            Err(ServiceNameError::ControlCharacter)
        );
    }
}
