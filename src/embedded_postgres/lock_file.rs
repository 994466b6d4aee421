//! Recovery from a server that was killed: its lock file, `postmaster.pid`, stays behind.
//!
//! PostgreSQL would refuse to start while the file names a live process (after a reboot, an
//! unrelated one may have that pid), and our readiness check could mistake its "ready" for the
//! new server's. A file that names a live server working in this folder must never be removed:
//! that server is really running, and without the file a second one could start on its data.

use std::{fs, path::Path};

use nix::{
    sys::signal::{self},
    unistd::Pid,
};

use super::{EmbeddedError, io_error};

/// Removes `data_dir`'s `postmaster.pid` unless it names a live postgres that works in
/// `data_dir`.
pub(super) fn remove_stale_lock_file(data_dir: &Path) -> Result<(), EmbeddedError> {
    let lock_file = data_dir.join("postmaster.pid");
    let Ok(contents) = fs::read_to_string(&lock_file) else {
        return Ok(());
    };
    let owner = contents
        .lines()
        .next()
        .and_then(|line| line.trim().parse::<i32>().ok())
        .map(Pid::from_raw);
    let running_here = owner.is_some_and(|pid| {
        // `kill(pid, None)` only asks whether the process exists (EPERM: it does, not ours).
        let alive = !matches!(signal::kill(pid, None), Err(nix::errno::Errno::ESRCH));
        // Where /proc exists, a live process counts only if it works in this folder.
        let cwd = fs::read_link(format!("/proc/{pid}/cwd"));
        alive && cwd.as_deref().map_or(true, |cwd| cwd == data_dir)
    });
    if !running_here {
        fs::remove_file(&lock_file).map_err(io_error(&lock_file))?;
    }
    Ok(())
}
