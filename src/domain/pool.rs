//! How full the database pool is: what readiness reports and the metrics sample.

/// How full a pool is: connections open, idle, and callers waiting for one. What `/readyz`
/// reports beside the database's own answer, and what metrics can sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}
