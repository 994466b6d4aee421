//! The name of a bookable service.

use std::fmt;

/// A service's name: 1 to 200 characters as sent, no control characters, not only white space
/// and invisible format characters; stored trimmed. The limits apply to the text as sent so that a schema (`maxLength`,
/// `pattern`) can state them exactly. Uniqueness (case-insensitive) is the database's to
/// enforce, not this type's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName(String);

pub const MAX_SERVICE_NAME_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    #[error("must not be empty, or only white space and invisible characters")]
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
        if trimmed
            .chars()
            .all(|c| c.is_whitespace() || is_invisible_format(c))
        {
            return Err(ServiceNameError::Empty);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Unicode's format characters (general category Cf) in the Basic Multilingual Plane: zero
/// width spaces and joiners, direction marks, the soft hyphen, the byte order mark and the
/// like, which draw nothing. A name of nothing else looks blank. (The few format characters
/// beyond the BMP, tag characters mostly, are not counted: the spec's pattern must state the
/// same rule to every regex engine, and ECMAScript's without the `u` flag sees only UTF-16
/// units.)
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
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
        for invisible in [
            "\u{200b}",
            " \u{feff}\u{200d} ",
            "\u{ad}",
            "\u{2060}\u{202e}",
        ] {
            assert_eq!(
                ServiceName::parse(invisible),
                Err(ServiceNameError::Empty),
                "{invisible:?}"
            );
        }
        assert_eq!(
            ServiceName::parse("Re\u{200b}pair").unwrap().as_str(),
            "Re\u{200b}pair",
            "a visible name may hold them"
        );
        for name in ["Tes\nting", "\tTabbed", "Trailing\n", "Next\u{85}Line"] {
            assert_eq!(
                ServiceName::parse(name),
                Err(ServiceNameError::ControlCharacter),
                "{name:?}"
            );
        }
    }
}
