//! Running the server process: a thread of the cluster's own starts `postgres` on the data
//! folder, waits until it accepts connections, keeps it until asked to stop (starting it again
//! if it exits on its own meanwhile), and stops it.
//!
//! Starting and stopping block (initdb, polling the lock file, waiting for the server to exit),
//! so none of it may run on an async runtime's threads; the [`Supervisor`] handle hands the
//! work to its thread and awaits the outcome. The thread lives exactly as long as the server,
//! which matters on Linux: PDEATHSIG fires when the *thread* that forked the child exits.
//!
//! It talks to the server only through signals and its lock file, never through SQL.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{self, Signal},
    unistd::Pid,
};

use super::{
    Durability, EmbeddedError, IMMEDIATE_STOP_TIMEOUT, STOP_TIMEOUT,
    binaries::Binaries,
    data_folder::{check_owner, create_replacing, initialise, locate},
    io_error,
    lock_file::clear_stale_lock_file,
    password::{has_password, require_password},
    process::{KERNEL_STOPS_ORPHANS, Watchdog, spawn_owned},
    server_user::run_as,
};

/// How long the server may take to accept connections once started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each step of a shutdown may take before the next, harsher one.
#[derive(Debug, Clone, Copy)]
pub(super) struct StopBounds {
    /// After SIGINT (fast shutdown), before SIGQUIT.
    pub(super) fast: Duration,
    /// After SIGQUIT (immediate shutdown), before SIGKILL.
    pub(super) immediate: Duration,
}

impl StopBounds {
    pub(super) const DEFAULT: Self = Self {
        fast: STOP_TIMEOUT,
        immediate: IMMEDIATE_STOP_TIMEOUT,
    };
}

/// Where the supervisor thread sends the outcome of a stop.
type StopReply = tokio::sync::oneshot::Sender<Result<(), EmbeddedError>>;

/// The cluster's end of its supervisor thread.
#[derive(Debug)]
pub(super) struct Supervisor {
    /// Stop requests. Dropping it (with the cluster) asks for a stop too.
    stop_requests: mpsc::Sender<StopReply>,
}

impl Supervisor {
    /// Starts the supervisor thread, which starts the server in `data_dir`; returns once the
    /// server accepts connections, with the folder it works in.
    pub(super) async fn start(
        data_dir: &Path,
        durability: Durability,
        stop_bounds: StopBounds,
        settings: Vec<String>,
    ) -> Result<(Self, PathBuf), EmbeddedError> {
        let (ready_sender, ready) = tokio::sync::oneshot::channel();
        let (stop_requests, stop_request_receiver) = mpsc::channel();
        let data_dir = data_dir.to_owned();
        std::thread::Builder::new()
            .name("orders-postgres".to_owned())
            .spawn(move || {
                supervise(
                    &data_dir,
                    durability,
                    stop_bounds,
                    &settings,
                    ready_sender,
                    stop_request_receiver,
                )
            })
            .map_err(|error| EmbeddedError::Command {
                step: "starting the thread that supervises postgres",
                detail: error.to_string(),
            })?;
        let data_dir = ready.await.map_err(|_| EmbeddedError::SupervisorLost)??;
        Ok((Self { stop_requests }, data_dir))
    }

    /// Asks the supervisor thread to stop the server, and waits until it has.
    pub(super) async fn stop(self) -> Result<(), EmbeddedError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.stop_requests
            .send(reply)
            .map_err(|_| EmbeddedError::SupervisorLost)?;
        outcome.await.map_err(|_| EmbeddedError::SupervisorLost)?
    }
}

/// The supervisor thread: starts the server, reports whether it is ready, keeps it running,
/// and stops it when asked or when its [`Supervisor`] is dropped.
fn supervise(
    data_dir: &Path,
    durability: Durability,
    stop_bounds: StopBounds,
    settings: &[String],
    ready: tokio::sync::oneshot::Sender<Result<PathBuf, EmbeddedError>>,
    stop_requests: mpsc::Receiver<StopReply>,
) {
    let mut server = match Server::start(data_dir, durability, stop_bounds, settings) {
        Ok(server) => server,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    // When whoever started the cluster gave up waiting, no one will ever ask for a stop.
    let stop_reply = if ready.send(Ok(server.data_dir.clone())).is_ok() {
        keep_running(
            &mut server,
            data_dir,
            durability,
            stop_bounds,
            settings,
            &stop_requests,
        )
    } else {
        None
    };
    let outcome = server.shut_down(stop_bounds);
    // With no one (left) to tell, the log is the only place an error can go.
    let unreported = match stop_reply {
        Some(reply) => reply.send(outcome).err().and_then(Result::err),
        None => outcome.err(),
    };
    if let Some(error) = unreported {
        tracing::error!(%error, "the private PostgreSQL cluster did not stop cleanly");
    }
}

/// How often the supervisor looks whether the server is still running.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How long to wait before the first try to restart a server that exited on its own, and the
/// most to wait between later tries; each failed try doubles the wait.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(250);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);

/// Keeps the server running until a stop is asked for (returned, with where to reply) or the
/// [`Supervisor`] is dropped (`None`). A server that exits on its own (killed, or out of
/// memory) is logged and started again, with back-off while starting fails.
///
/// Restarting is sound because PostgreSQL guards its data folder itself: a server killed
/// without its backends leaves them attached to its shared memory until they notice it is
/// gone (at once when idle, at their next check when busy), and a new server refuses to start
/// while any is ("pre-existing shared memory block is still in use"); so a start can only fail
/// and be tried again, never run beside the old backends. It then recovers from its
/// write-ahead log like after a crash: what was committed is kept.
fn keep_running(
    server: &mut Server,
    data_dir: &Path,
    durability: Durability,
    stop_bounds: StopBounds,
    settings: &[String],
    stop_requests: &mpsc::Receiver<StopReply>,
) -> Option<StopReply> {
    loop {
        match stop_requests.recv_timeout(WATCH_INTERVAL) {
            Ok(reply) => return Some(reply),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let status = match server.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(%error, "cannot tell whether the private PostgreSQL server runs");
                continue;
            }
        };
        tracing::error!(
            %status,
            log = %server.data_dir.join("server.log").display(),
            "the private PostgreSQL server exited on its own: restarting it"
        );
        if let Some(watchdog) = server.watchdog.take()
            && let Err(error) = watchdog.disarm()
        {
            tracing::warn!(%error, "the watchdog of the private PostgreSQL cluster did not exit cleanly");
        }
        let mut delay = FIRST_RESTART_DELAY;
        loop {
            // Waiting between tries is waiting for a stop request too.
            match stop_requests.recv_timeout(delay) {
                Ok(reply) => return Some(reply),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            match Server::start(data_dir, durability, stop_bounds, settings) {
                Ok(restarted) => {
                    tracing::info!("the private PostgreSQL server is running again");
                    *server = restarted;
                    break;
                }
                Err(error) => {
                    delay = (delay * 2).min(MAX_RESTART_DELAY);
                    tracing::error!(%error, retry_in = ?delay, "could not restart the private PostgreSQL server");
                }
            }
        }
    }
}

/// A running server process, and the folder it works in.
#[derive(Debug)]
struct Server {
    data_dir: PathBuf,
    child: Child,
    /// Where the kernel does not stop the server when we are gone, the process that does.
    watchdog: Option<Watchdog>,
}

impl Server {
    /// Starts the server in `data_dir`, creating the cluster first if the folder holds none,
    /// and blocks until it accepts connections. `settings` (`name=value`) come after ours.
    fn start(
        data_dir: &Path,
        durability: Durability,
        stop_bounds: StopBounds,
        settings: &[String],
    ) -> Result<Self, EmbeddedError> {
        let binaries = Binaries::find()?;
        let run_as = run_as()?;
        let data_dir = locate(data_dir, run_as.as_ref())?;
        let socket = data_dir.join(".s.PGSQL.5432");
        if socket.as_os_str().len() > 107 {
            return Err(EmbeddedError::SocketPathTooLong(socket));
        }

        if data_dir.join("PG_VERSION").exists() {
            check_owner(&data_dir, run_as.as_ref())?;
        } else {
            initialise(&binaries, &data_dir, durability, run_as.as_ref())?;
        }
        clear_stale_lock_file(&data_dir)?;
        // A cluster just made, or made by an older version that trusted every connection on
        // its socket, gets its password before its server first listens.
        if !has_password(&data_dir) {
            require_password(&binaries, &data_dir, durability, run_as.as_ref())?;
        }

        let log_path = data_dir.join("server.log");
        // The data folder is the server user's: a symlink planted as server.log is replaced,
        // never followed.
        let log = create_replacing(&log_path, run_as.as_ref())?;
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
        for setting in settings {
            postgres.arg("-c").arg(setting);
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
        let mut server = Self {
            data_dir,
            child,
            watchdog: None,
        };
        let ready = server
            .start_watchdog()
            .and_then(|()| server.wait_until_ready(READY_TIMEOUT, &log_path));
        if let Err(error) = ready {
            if let Err(stop_error) = server.shut_down(stop_bounds) {
                tracing::error!(error = %stop_error, "the private PostgreSQL cluster did not stop cleanly");
            }
            return Err(error);
        }
        Ok(server)
    }

    fn start_watchdog(&mut self) -> Result<(), EmbeddedError> {
        if !KERNEL_STOPS_ORPHANS {
            let watchdog =
                Watchdog::start(self.child.id()).map_err(|error| EmbeddedError::Command {
                    step: "starting the watchdog for postgres",
                    detail: error.to_string(),
                })?;
            self.watchdog = Some(watchdog);
        }
        Ok(())
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

    /// Stops the server and waits for it to exit: a fast shutdown (SIGINT: open transactions
    /// are rolled back, everything committed is kept), then, if it is still running, an
    /// immediate one (SIGQUIT: recovered from the log on next start), and at last SIGKILL for
    /// it and its processes, which no process can ignore, not even a stopped (SIGSTOP) one.
    fn shut_down(&mut self, bounds: StopBounds) -> Result<(), EmbeddedError> {
        // Before the server is reaped (and its pid free for reuse), the watchdog must know
        // that it is not to signal it.
        if let Some(watchdog) = self.watchdog.take()
            && let Err(error) = watchdog.disarm()
        {
            tracing::warn!(%error, "the watchdog of the private PostgreSQL cluster did not exit cleanly");
        }
        if self.has_exited()? {
            return Ok(());
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        // Not reaped yet, so the pid is still the server's; errors would only mean it has
        // exited meanwhile.
        let _ = signal::kill(pid, Signal::SIGINT);
        if self.exits_within(bounds.fast)? {
            return Ok(());
        }
        tracing::warn!(timeout = ?bounds.fast, "PostgreSQL did not finish a fast shutdown in time: asking for an immediate one");
        let _ = signal::kill(pid, Signal::SIGQUIT);
        if self.exits_within(bounds.immediate)? {
            return Ok(());
        }
        tracing::error!(timeout = ?bounds.immediate, "PostgreSQL did not finish an immediate shutdown in time: killing it");
        // The server leads a process group of its own (see `process_group(0)` above), which
        // holds its backends too: none is left holding its shared memory.
        let _ = signal::killpg(pid, Signal::SIGKILL);
        self.child.wait().map_err(io_error(&self.data_dir))?;
        Ok(())
    }

    fn has_exited(&mut self) -> Result<bool, EmbeddedError> {
        let status = self.child.try_wait().map_err(io_error(&self.data_dir))?;
        Ok(status.is_some())
    }

    fn exits_within(&mut self, timeout: Duration) -> Result<bool, EmbeddedError> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.has_exited()? {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.has_exited()
    }
}
