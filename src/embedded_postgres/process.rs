//! Child processes (initdb, the server) run as the server user (see `server_user`) when we are
//! root, and set up so they do not outlive us.
//!
//! How a child learns that we are gone depends on the kernel. Linux has PDEATHSIG: the child
//! gets a signal when the thread that forked it exits, however it exits. Other Unixes (macOS,
//! the BSDs) have nothing like it, so there a [`Watchdog`] process waits on a pipe that only
//! we hold open, and signals the server once the kernel closes it.
//!
//! Nothing here decides what to run or where: it only spawns what it is given.

use std::{
    io::{self, Write},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
};

use super::{EmbeddedError, server_user::RunAs};

/// Whether children get SIGINT from the kernel when the thread that spawned them exits
/// (PDEATHSIG). Where they do not, the server needs a [`Watchdog`].
pub(super) const KERNEL_STOPS_ORPHANS: bool = cfg!(target_os = "linux");

/// Spawns `command` as `run_as` (when set). On Linux the child gets SIGINT when the calling
/// thread exits.
pub(super) fn spawn_owned(command: &mut Command, run_as: Option<&RunAs>) -> io::Result<Child> {
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    #[cfg(target_os = "linux")]
    interrupt_when_this_thread_exits(command);
    command.spawn()
}

#[cfg(target_os = "linux")]
fn interrupt_when_this_thread_exits(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // code may run: another thread may have held the allocator's lock at the fork. It makes
    // two system calls (prctl, getppid) and allocates nothing: its errors are raw errno values
    // (`from_raw_os_error` builds an io::Error without a heap allocation).
    unsafe {
        command.pre_exec(move || {
            // Set here, after std has changed the uid (which clears PDEATHSIG): std runs
            // pre_exec closures after setgid/setuid.
            if let Err(errno) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGINT) {
                return Err(io::Error::from_raw_os_error(errno as i32));
            }
            // The parent may have died before prctl took effect; then the child was adopted
            // and no signal will come. "No such process": the one it belonged to is gone.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A small `/bin/sh` process that sends the server SIGINT (a fast shutdown) once this
/// process is gone, for kernels without PDEATHSIG.
///
/// It blocks reading a pipe whose only writer we hold. However this process ends (a clean
/// exit, a crash, SIGKILL), the kernel closes the writer, the read finds the end of input, and
/// the watchdog signals the server. [`Watchdog::disarm`] first writes a line, which makes it
/// exit without signalling: after we have stopped and reaped the server, its pid may belong
/// to another process.
#[derive(Debug)]
pub(super) struct Watchdog {
    process: Child,
    /// Closed on drop, like the kernel does when this process dies: a watchdog dropped
    /// without being disarmed stops the server.
    writer: io::PipeWriter,
}

/// `$1` is the server's pid. `read` fails only at the end of input with nothing read.
const WATCHDOG_SCRIPT: &str = r#"read -r _ || kill -INT "$1""#;

impl Watchdog {
    /// Starts a watchdog for the process `server`.
    pub(super) fn start(server: u32) -> io::Result<Self> {
        // Both ends are close-on-exec: no other child of ours inherits the writer and keeps
        // the pipe open after we are gone.
        let (reader, writer) = io::pipe()?;
        let process = Command::new("/bin/sh")
            .args(["-c", WATCHDOG_SCRIPT, "orders-postgres-watchdog"])
            .arg(server.to_string())
            .stdin(reader)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Like the server, out of the terminal's process group: a Ctrl-C is ours to handle.
            .process_group(0)
            .spawn()?;
        Ok(Self { process, writer })
    }

    /// Tells the watchdog that we stop the server ourselves, and waits until it has exited.
    pub(super) fn disarm(mut self) -> io::Result<()> {
        // A watchdog that is already gone (killed by hand, say) has nothing left to do.
        let _ = self.writer.write_all(b"\n");
        drop(self.writer);
        self.process.wait().map(drop)
    }
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

#[cfg(test)]
mod tests {
    use std::{
        os::unix::process::ExitStatusExt,
        time::{Duration, Instant},
    };

    use nix::sys::signal::{SigHandler, Signal, signal};

    use super::*;

    /// Stands in for the server: a process that SIGINT ends, whatever this test process was
    /// told to ignore (ignored signals stay ignored across exec).
    fn stand_in_server() -> Child {
        let mut command = Command::new("sleep");
        command.arg("30");
        // SAFETY: runs in the forked child before exec and only resets a signal disposition
        // (sigaction, async-signal-safe).
        unsafe {
            command.pre_exec(|| {
                signal(Signal::SIGINT, SigHandler::SigDfl)
                    .map(drop)
                    .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
            });
        }
        command.spawn().unwrap()
    }

    fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn the_watchdog_interrupts_the_server_once_the_pipe_from_us_is_closed() {
        let mut server = stand_in_server();
        let watchdog = Watchdog::start(server.id()).unwrap();

        // What the kernel does to our end of the pipe when this process dies.
        drop(watchdog);

        let status = exit_within(&mut server, Duration::from_secs(5));
        if status.is_none() {
            let _ = server.kill();
        }
        assert_eq!(
            status.and_then(|status| status.signal()),
            Some(Signal::SIGINT as i32)
        );
    }

    #[test]
    fn a_disarmed_watchdog_exits_and_leaves_the_server_alone() {
        let mut server = stand_in_server();
        let watchdog = Watchdog::start(server.id()).unwrap();

        watchdog.disarm().unwrap();

        let status = exit_within(&mut server, Duration::from_millis(300));
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(status, None, "the server was signalled");
    }
}
