//! Running the server process: starting `postgres` on the data folder, waiting until it
//! accepts connections, and stopping it again.
//!
//! It talks to the server only through signals and its lock file, never through SQL.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{self, Signal},
    unistd::Pid,
};

use super::{
    Durability, EmbeddedError, STOP_TIMEOUT,
    binaries::Binaries,
    data_folder::{absolute, initialise},
    io_error,
    lock_file::remove_stale_lock_file,
    process::{run_as, spawn_owned},
};

/// How long the server may take to accept connections once started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server process, and the folder it works in.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) data_dir: PathBuf,
    child: Child,
}

impl Server {
    /// Starts the server in `data_dir`, creating the cluster first if the folder holds none,
    /// and blocks until it accepts connections.
    pub(super) fn start(data_dir: &Path, durability: Durability) -> Result<Self, EmbeddedError> {
        let binaries = Binaries::find()?;
        let run_as = run_as()?;
        let data_dir = absolute(data_dir)?;
        let socket = data_dir.join(".s.PGSQL.5432");
        if socket.as_os_str().len() > 107 {
            return Err(EmbeddedError::SocketPathTooLong(socket));
        }

        if !data_dir.join("PG_VERSION").exists() {
            initialise(&binaries, &data_dir, durability, run_as.as_ref())?;
        }
        remove_stale_lock_file(&data_dir)?;

        let log_path = data_dir.join("server.log");
        let log = fs::File::create(&log_path).map_err(io_error(&log_path))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&log_path, Some(user.uid), Some(user.gid))
                .map_err(io_error(&log_path))?;
        }
        let mut postgres = binaries.command("postgres");
        postgres
            .arg("-D")
            .arg(&data_dir)
            // Only the socket in our own folder: no TCP port to clash with another server.
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", data_dir.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_error(&log_path))?)
            .stderr(log);
        if durability == Durability::Throwaway {
            postgres.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        // A process group of its own, so a Ctrl-C in the terminal reaches only us: the server
        // must keep serving while in-flight requests drain, and stop when we say.
        postgres.process_group(0);
        let child = spawn_owned(&mut postgres, run_as.as_ref()).map_err(|error| {
            EmbeddedError::Command {
                step: "starting postgres",
                detail: error.to_string(),
            }
        })?;
        let mut server = Self { data_dir, child };
        if let Err(error) = server.wait_until_ready(READY_TIMEOUT, &log_path) {
            if let Err(stop_error) = server.shut_down() {
                tracing::error!(error = %stop_error, "the private PostgreSQL cluster did not stop cleanly");
            }
            return Err(error);
        }
        Ok(server)
    }

    fn wait_until_ready(&mut self, timeout: Duration, log: &Path) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        // postmaster.pid names the server's pid on its first line, and its last line reads
        // "ready" once the server accepts connections. A file left by a server that was killed
        // also says "ready", so the pid must be our child's.
        let pid_file = self.data_dir.join("postmaster.pid");
        let our_pid = self.child.id().to_string();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = fs::read_to_string(log).unwrap_or_default();
                return Err(EmbeddedError::Command {
                    step: "postgres",
                    detail: format!("exited with {status} during start-up: {}", tail.trim()),
                });
            }
            if fs::read_to_string(&pid_file).is_ok_and(|contents| {
                contents.lines().next() == Some(our_pid.as_str())
                    && contents.lines().any(|line| line.trim() == "ready")
            }) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EmbeddedError::NotReady(timeout, log.to_owned()))
    }

    /// Stops the server with a fast shutdown (open transactions are rolled back, everything
    /// committed is kept) and waits for it to exit. A server that has not stopped after
    /// [`STOP_TIMEOUT`] gets an immediate shutdown, which recovers from its log on next start.
    pub(super) fn shut_down(&mut self) -> Result<(), EmbeddedError> {
        if self
            .child
            .try_wait()
            .map_err(io_error(&self.data_dir))?
            .is_some()
        {
            return Ok(());
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        // The server may already be gone; then there is nothing to stop.
        let _ = signal::kill(pid, Signal::SIGINT);
        let started = Instant::now();
        while self
            .child
            .try_wait()
            .map_err(io_error(&self.data_dir))?
            .is_none()
        {
            if started.elapsed() > STOP_TIMEOUT {
                let _ = signal::kill(pid, Signal::SIGQUIT);
                self.child.wait().map_err(io_error(&self.data_dir))?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}
