//! The process's open-file limit: raised as far as it may go at start, and the share of it
//! that client connections may take.
//!
//! Every connection is a file descriptor; so are the pool's database connections, the log, the
//! private cluster's pipes and the files a request may open. Client connections get what is
//! left after a reserve for those, so that a client holding many connections cannot make the
//! process fail to open anything else.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept back from client connections for everything else the process opens,
/// besides its database connections and a tenth of the limit.
const RESERVED: u64 = 64;

/// Raises the soft open-file limit to the hard limit and returns the soft limit now in force.
/// Failing that (or on a system that reports no limit), it says so in the log and returns the
/// limit as it was.
pub fn raise_soft_limit() -> Option<u64> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "could not read the open-file limit");
            return None;
        }
    };
    if soft >= hard {
        tracing::info!(
            open_file_limit = soft,
            "the open-file limit is at its maximum already"
        );
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(
                open_file_limit = hard,
                was = soft,
                "raised the open-file limit to its maximum"
            );
            Some(hard)
        }
        Err(error) => {
            tracing::warn!(
                %error,
                open_file_limit = soft,
                hard_limit = hard,
                "could not raise the open-file limit"
            );
            Some(soft)
        }
    }
}

/// How many client connections to allow under an open-file limit of `limit` (`None`: not
/// known), with `database_connections` kept for the pool: the limit less a reserve of
/// [`RESERVED`], the pool and a tenth of the limit; never less than one.
pub fn default_connection_cap(limit: Option<u64>, database_connections: usize) -> usize {
    // Without a known limit, as many as a common default limit (1024) would allow.
    let limit = limit.unwrap_or(1024);
    let reserve = RESERVED + database_connections as u64 + limit / 10;
    usize::try_from(limit.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_for_the_pool_and_other_files() {
        assert_eq!(default_connection_cap(Some(1024), 8), 1024 - 64 - 8 - 102);
        assert_eq!(default_connection_cap(Some(1_048_576), 8), 943_647);
        assert_eq!(default_connection_cap(Some(50), 8), 1);
        assert_eq!(
            default_connection_cap(None, 8),
            default_connection_cap(Some(1024), 8)
        );
    }
}
