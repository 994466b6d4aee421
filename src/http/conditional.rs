//! Conditional requests: strong ETags from record versions, `If-Match` and `If-None-Match`.

/// The strong ETag of a record at `version`.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header, or `*`: write whatever the current version is (the record must exist).
    Any,
    /// Write only if the current version is one of these. May be empty (a list of weak or
    /// foreign tags), which nothing matches.
    Versions(Vec<i64>),
}

impl IfMatch {
    pub fn parse(header: Option<&str>) -> Self {
        match header.map(str::trim) {
            None | Some("*") => Self::Any,
            // `If-Match` uses the strong comparison: weak tags never match.
            Some(list) => Self::Versions(
                entity_tags(list)
                    .filter(|tag| !tag.weak)
                    .filter_map(|tag| tag.version)
                    .collect(),
            ),
        }
    }

    /// The versions to pass to storage; `None` means any.
    pub fn versions(&self) -> Option<&[i64]> {
        match self {
            Self::Any => None,
            Self::Versions(versions) => Some(versions),
        }
    }
}

/// Whether an `If-None-Match` header matches the current version (so a GET answers 304).
/// Uses the weak comparison, as RFC 9110 prescribes for `If-None-Match`.
pub fn if_none_match_matches(header: Option<&str>, version: i64) -> bool {
    match header.map(str::trim) {
        None => false,
        Some("*") => true,
        Some(list) => entity_tags(list).any(|tag| tag.version == Some(version)),
    }
}

struct EntityTag {
    weak: bool,
    /// The version, when the tag is one of ours.
    version: Option<i64>,
}

fn entity_tags(list: &str) -> impl Iterator<Item = EntityTag> + '_ {
    list.split(',').map(str::trim).map(|tag| {
        let (weak, opaque) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let version = opaque
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .and_then(|inner| inner.parse().ok());
        EntityTag { weak, version }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_reads_strong_tags_only() {
        assert_eq!(IfMatch::parse(None), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("*")), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("\"3\"")), IfMatch::Versions(vec![3]));
        assert_eq!(
            IfMatch::parse(Some("\"1\", W/\"2\", \"x\", \"4\"")),
            IfMatch::Versions(vec![1, 4])
        );
        assert_eq!(IfMatch::parse(Some("3")), IfMatch::Versions(vec![]));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(if_none_match_matches(Some("W/\"2\""), 2));
        assert!(if_none_match_matches(Some("\"1\", \"2\""), 2));
        assert!(if_none_match_matches(Some("*"), 7));
        assert!(!if_none_match_matches(Some("\"1\""), 2));
        assert!(!if_none_match_matches(None, 2));
    }
}
