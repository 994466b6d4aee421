//! Text a caller chose (a path, a query, a header), as a log line holds it: at most
//! [`MAX_FIELD_BYTES`] of it, so that no request can make its line, and so the log, grow with
//! what it sends. A request line and its headers may be hundreds of kilobytes; an operator
//! needs the start of each, and to see that it was cut.

use std::fmt::{self, Display, Write};

/// The most bytes of one caller's text that a log line shows.
pub const MAX_FIELD_BYTES: usize = 256;

/// Bytes a caller chose, shown whole when they are at most [`MAX_FIELD_BYTES`], else cut there
/// (before the character the bound falls in, if it falls in one) and marked with `…` and their
/// whole length: `/aaaa…(61441 bytes)`. Bytes that are not UTF-8 are shown as `�`. Written
/// straight into the line, with no copy.
#[derive(Debug, Clone, Copy)]
pub struct Bounded<'a>(&'a [u8]);

impl<'a> Bounded<'a> {
    pub fn text(text: &'a str) -> Self {
        Self(text.as_bytes())
    }

    pub fn bytes(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }
}

impl Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        let mut end = bytes.len().min(MAX_FIELD_BYTES);
        // Back to the first byte of the character the cut falls in (UTF-8's continuation bytes
        // are 0b10xx_xxxx), so that no character is shown in part: three bytes back at most, as
        // a character has four, so that bytes that are no text at all are still shown.
        if end < bytes.len() {
            let floor = end.saturating_sub(3);
            while end > floor && bytes[end] & 0xC0 == 0x80 {
                end -= 1;
            }
        }
        for chunk in bytes[..end].utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        if end < bytes.len() {
            write!(f, "…({} bytes)", bytes.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_no_text_are_cut_near_the_bound_not_dropped() {
        let noise = vec![0x80u8; 2 * MAX_FIELD_BYTES];
        let shown = Bounded::bytes(&noise).to_string();
        assert!(
            shown.ends_with(&format!("…({} bytes)", noise.len())),
            "{shown}"
        );
        assert!(
            shown
                .chars()
                .filter(|c| *c == char::REPLACEMENT_CHARACTER)
                .count()
                >= 1,
            "{shown}"
        );
    }

    #[test]
    fn short_text_is_shown_whole_and_long_text_cut_and_marked() {
        assert_eq!(Bounded::text("/orders/223").to_string(), "/orders/223");
        let exactly = "a".repeat(MAX_FIELD_BYTES);
        assert_eq!(Bounded::text(&exactly).to_string(), exactly);

        let long = "a".repeat(60_000);
        assert_eq!(
            Bounded::text(&long).to_string(),
            format!("{}…(60000 bytes)", "a".repeat(MAX_FIELD_BYTES))
        );
    }

    #[test]
    fn a_cut_never_falls_inside_a_character() {
        // `é` is two bytes: the bound falls in the middle of the first one.
        let text = format!("{}{}", "a".repeat(MAX_FIELD_BYTES - 1), "é".repeat(10));
        let shown = Bounded::text(&text).to_string();
        assert_eq!(
            shown,
            format!("{}…({} bytes)", "a".repeat(MAX_FIELD_BYTES - 1), text.len())
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        assert_eq!(Bounded::bytes(b"curl/8 \xff\xfe").to_string(), "curl/8 ��");
    }
}
