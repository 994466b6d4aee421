//! Waiting for what a test needs to have happened, instead of sleeping for a time that is
//! too short on a loaded machine and too long on an idle one; and what a wait cost.

use std::time::{Duration, Instant};

/// How often a condition is asked again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `condition` holds, asking it again every few milliseconds; fails the test,
/// saying `what` was awaited, when it has not held within `bound`. Returns how long it took.
pub async fn eventually(
    what: &str,
    bound: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    eventually_some(what, bound, async || condition().await.then_some(())).await;
    started.elapsed()
}

/// Waits until `find` finds what it looks for, asking it again every few milliseconds, and
/// returns it; fails the test, saying `what` was awaited, when it has found nothing within
/// `bound`.
pub async fn eventually_some<T>(
    what: &str,
    bound: Duration,
    mut find: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = find().await {
            return found;
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// CPU time (user and system) the process `pid` has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time_of(pid: u32) -> Duration {
    cpu_time_in(&format!("/proc/{pid}/stat"))
}

/// CPU time (user and system) the calling thread has used so far: what the test's own work
/// cost, whatever the other tests running beside it do.
pub fn cpu_time_of_this_thread() -> Duration {
    cpu_time_in("/proc/thread-self/stat")
}

/// The CPU time in a `stat` file of `/proc` (a process's or a thread's: they read alike).
fn cpu_time_in(stat_file: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_file).unwrap();
    // The fields after the command's name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}
