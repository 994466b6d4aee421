//! The name of a bookable service.

use std::fmt;

/// A service's name: 1 to 200 characters as sent, no control characters, not only white space;
/// stored trimmed. The limits apply to the text as sent so that a schema (`maxLength`,
/// `pattern`) can state them exactly. Uniqueness (case-insensitive) is the database's to
/// enforce, not this type's.
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
        if text.chars().any(char::is_control) {
            return Err(ServiceNameError::ControlCharacter);
        }
        if text.chars().count() > MAX_SERVICE_NAME_CHARS {
            return Err(ServiceNameError::TooLong);
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ServiceNameError::Empty);
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
    fn the_limit_counts_the_name_as_sent_with_its_spaces() {
        let padded = format!(" {} ", "x".repeat(199));
        assert_eq!(ServiceName::parse(&padded), Err(ServiceNameError::TooLong));
    }

    #[test]
    fn blank_names_and_control_characters_anywhere_are_refused() {
        assert_eq!(
            ServiceName::parse("  \u{3000} "),
            Err(ServiceNameError::Empty)
        );
        assert_eq!(ServiceName::parse(""), Err(ServiceNameError::Empty));
        for name in ["Tes\nting", "\tTabbed", "Trailing\n", "Next\u{85}Line"] {
            assert_eq!(
                ServiceName::parse(name),
                Err(ServiceNameError::ControlCharacter),
                "{name:?}"
            );
        }
    }
}
