//! Idempotent creates as the layers share them: a client's key for one logical request, and
//! the first answer to it, kept for replay.

/// A client's key for one logical request: 1 to 255 printable ASCII characters. The same
/// string from two API keys is two keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

impl IdempotencyKey {
    pub fn parse(text: &str) -> Option<Self> {
        let printable = text.bytes().all(|byte| (0x20..=0x7e).contains(&byte));
        (printable && (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&text.len()))
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The first answer to a request, as it is replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    pub location: Option<String>,
    pub etag: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters() {
        assert!(IdempotencyKey::parse("a").is_some());
        assert!(IdempotencyKey::parse("order 42 / retry").is_some());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_some());
        for bad in ["", "\t", "é", "a\u{7f}", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_none(), "{bad:?}");
        }
    }
}
