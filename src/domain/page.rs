//! A page of results in keyset order.

/// A page of results in keyset order, and the key to continue after it, if there is more.
#[derive(Debug)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

impl<T, K> Page<T, K> {
    /// The last page, with nothing on it.
    pub fn empty() -> Self {
        Self {
            items: Vec::new(),
            next: None,
        }
    }

    /// Builds a page from up to `limit + 1` rows: the extra row, if present, only proves that
    /// another page exists, and the last kept row's key is where that page starts after.
    pub fn from_overfetched(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> K) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(key)
        } else {
            None
        };
        Self { items, next }
    }
}
