//! Child processes (initdb, the server) run as the unprivileged server user when we are root,
//! and set up so they do not outlive us.
//!
//! Nothing here decides what to run or where: it only spawns what it is given.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
};

use nix::{
    sys::signal::Signal,
    unistd::{Uid, User},
};

use super::EmbeddedError;

/// The unprivileged user the server runs as, when we are root.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// Who the server must run as: nobody in particular unless we are root, since PostgreSQL
/// refuses to run as root.
pub(super) fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| User::from_name(name).ok().flatten())
        .map(|user| {
            Some(RunAs {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })
        })
        .ok_or(EmbeddedError::NoUnprivilegedUser)
}

/// Spawns `command` as `run_as` (when set), set to receive SIGINT when this thread exits.
pub(super) fn spawn_owned(command: &mut Command, run_as: Option<&RunAs>) -> std::io::Result<Child> {
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            // Set after the uid change above (which clears it); std applies uid/gid first.
            nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect; then the child was adopted.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Runs `command` as `run_as` until it exits, and fails with its output unless it succeeds.
pub(super) fn run_to_completion(
    step: &'static str,
    command: &mut Command,
    run_as: Option<&RunAs>,
) -> Result<(), EmbeddedError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_owned(command, run_as).map_err(|error| EmbeddedError::Command {
        step,
        detail: error.to_string(),
    })?;
    let output = child
        .wait_with_output()
        .map_err(|error| EmbeddedError::Command {
            step,
            detail: error.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(EmbeddedError::Command {
            step,
            detail: format!(
                "exited with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}
