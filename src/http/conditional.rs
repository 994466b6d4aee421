//! Conditional requests: strong ETags from record revisions, `If-Match` and `If-None-Match`.
//!
//! A service's ETag is its version (`"3"`); an order's is its own version and the sum of its
//! services' versions (`"3.5"`, see [`OrderRevision`]), so that renaming a
//! service changes the ETags of the orders that show its name.

use crate::{app::Precondition, domain::OrderRevision};

/// A record revision that an ETag stands for.
pub trait Revision: Sized + PartialEq {
    /// The ETag's opaque part, without the quotes.
    fn opaque(&self) -> String;
    /// The revision an ETag's opaque part stands for, if it is one of ours.
    fn from_opaque(opaque: &str) -> Option<Self>;
}

/// A service's version.
impl Revision for i64 {
    fn opaque(&self) -> String {
        self.to_string()
    }

    fn from_opaque(opaque: &str) -> Option<Self> {
        // Strong comparison is character by character, so only the one spelling we write is
        // ours: digits, no sign, no leading zero (`"03"` is not `"3"`).
        let ours = opaque.bytes().all(|byte| byte.is_ascii_digit())
            && (opaque == "0" || !opaque.starts_with('0'));
        ours.then(|| opaque.parse().ok()).flatten()
    }
}

impl Revision for OrderRevision {
    fn opaque(&self) -> String {
        format!("{}.{}", self.order, self.services)
    }

    fn from_opaque(opaque: &str) -> Option<Self> {
        let (order, services) = opaque.split_once('.')?;
        Some(Self {
            order: i64::from_opaque(order)?,
            services: i64::from_opaque(services)?,
        })
    }
}

/// The strong ETag of a record at `revision`.
pub fn etag(revision: &impl Revision) -> String {
    format!("\"{}\"", revision.opaque())
}

/// What an `If-Match` header asks of a write.
pub fn if_match<R: Revision>(header: Option<&str>) -> Precondition<R> {
    match header.map(str::trim) {
        None => Precondition::None,
        Some("*") => Precondition::Exists,
        // `If-Match` uses the strong comparison: weak tags never match.
        Some(list) => Precondition::OneOf(
            entity_tags(list)
                .filter(|tag| !tag.weak)
                .filter_map(|tag| R::from_opaque(tag.opaque))
                .collect(),
        ),
    }
}

/// Whether an `If-None-Match` header matches the current revision (so a GET answers 304).
/// Uses the weak comparison, as RFC 9110 prescribes for `If-None-Match`.
pub fn if_none_match_matches<R: Revision>(header: Option<&str>, current: &R) -> bool {
    match header.map(str::trim) {
        None => false,
        Some("*") => true,
        Some(list) => {
            entity_tags(list).any(|tag| R::from_opaque(tag.opaque).as_ref() == Some(current))
        }
    }
}

struct EntityTag<'a> {
    weak: bool,
    /// What is between the quotes; empty for a tag that is not quoted.
    opaque: &'a str,
}

fn entity_tags(list: &str) -> impl Iterator<Item = EntityTag<'_>> {
    list.split(',').map(str::trim).map(|tag| {
        let (weak, quoted) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let opaque = quoted
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_default();
        EntityTag { weak, opaque }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(order: i64, services: i64) -> OrderRevision {
        OrderRevision { order, services }
    }

    #[test]
    fn order_etags_carry_both_versions_and_read_back() {
        assert_eq!(etag(&revision(3, 5)), "\"3.5\"");
        assert_eq!(
            if_match::<OrderRevision>(Some("\"3.5\"")),
            Precondition::OneOf(vec![revision(3, 5)])
        );
        for foreign in [
            "\"3\"",
            "\"3.5.1\"",
            "\"3.x\"",
            "\".5\"",
            "\"+3.5\"",
            "\"03.5\"",
            "\"3.05\"",
        ] {
            assert_eq!(
                if_match::<OrderRevision>(Some(foreign)),
                Precondition::OneOf(vec![]),
                "{foreign}"
            );
        }
    }

    #[test]
    fn if_match_reads_strong_tags_only() {
        assert_eq!(if_match::<i64>(None), Precondition::None);
        assert_eq!(if_match::<i64>(Some("*")), Precondition::Exists);
        assert_eq!(if_match::<i64>(Some("\"3\"")), Precondition::OneOf(vec![3]));
        assert_eq!(
            if_match::<i64>(Some("\"1\", W/\"2\", \"x\", \"4\"")),
            Precondition::OneOf(vec![1, 4])
        );
        assert_eq!(if_match::<i64>(Some("3")), Precondition::OneOf(vec![]));
        assert_eq!(if_match::<i64>(Some("\"03\"")), Precondition::OneOf(vec![]));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(if_none_match_matches(Some("W/\"2\""), &2));
        assert!(if_none_match_matches(Some("\"1\", \"2\""), &2));
        assert!(if_none_match_matches(Some("*"), &7));
        assert!(!if_none_match_matches(Some("\"1\""), &2));
        assert!(!if_none_match_matches(None, &2));
        assert!(if_none_match_matches(Some("\"2.4\""), &revision(2, 4)));
        assert!(!if_none_match_matches(Some("\"2.3\""), &revision(2, 4)));
    }
}
