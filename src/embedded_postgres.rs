//! A private PostgreSQL cluster, run from the machine's own server binaries, for when no
//! `DATABASE_URL` is given (and for the test suite).
//!
//! The cluster lives in a data folder of ours and listens only on a Unix socket inside that
//! folder, so it can clash with no other server. PostgreSQL refuses to run as root; when we
//! are root, the server runs as an unprivileged system user (`postgres`, else `nobody`).
//! The server is a child process that gets SIGINT (PostgreSQL's "fast shutdown") when its
//! parent dies, so a crashed or killed parent never leaves it running.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{self, Signal},
    unistd::{Pid, Uid, User},
};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) were found on PATH, via `pg_config --bindir`, \
         in /usr/lib/postgresql/*/bin or in Homebrew's folders. Install PostgreSQL's server \
         (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@16`), \
         or set DATABASE_URL to use a server you already have"
    )]
    BinariesNotFound,
    #[error(
        "running as root, and no unprivileged user (postgres, nobody) exists to run PostgreSQL as"
    )]
    NoUnprivilegedUser,
    #[error(
        "the socket path {0} is longer than a Unix socket allows (107 bytes); choose a shorter data folder"
    )]
    SocketPathTooLong(PathBuf),
    #[error(
        "PostgreSQL runs as the unprivileged user with uid {uid}, who cannot reach {path}: \
         a folder above it is closed to other users. Choose a data folder it can reach \
         (--data-dir or ORDERS_DATA_DIR), for example under /tmp"
    )]
    Unreachable { path: PathBuf, uid: u32 },
    #[error(
        "the data folder {0} holds files but no PostgreSQL cluster; move them away or choose another --data-dir"
    )]
    NotACluster(PathBuf),
    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },
    #[error("PostgreSQL did not become ready within {0:?}; its log is {1}")]
    NotReady(Duration, PathBuf),
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the server binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Looks where PostgreSQL is usually installed: PATH, `pg_config --bindir`,
    /// `/usr/lib/postgresql/<newest>/bin`, Homebrew.
    pub fn find() -> Result<Self, EmbeddedError> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
            && output.status.success()
        {
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            candidates.push(PathBuf::from(dir));
        }
        candidates.extend(versioned_dirs("/usr/lib/postgresql", "bin"));
        candidates.extend(versioned_dirs("/opt/homebrew/opt", "bin"));
        candidates.extend(versioned_dirs("/usr/local/opt", "bin"));
        candidates.push(PathBuf::from("/opt/homebrew/bin"));
        candidates.push(PathBuf::from("/usr/local/bin"));
        Self::find_in(candidates)
    }

    /// The first of `candidates` that holds both `initdb` and `postgres`.
    fn find_in(candidates: impl IntoIterator<Item = PathBuf>) -> Result<Self, EmbeddedError> {
        candidates
            .into_iter()
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
            .map(|dir| Self { dir })
            .ok_or(EmbeddedError::BinariesNotFound)
    }

    fn command(&self, name: &str) -> Command {
        Command::new(self.dir.join(name))
    }
}

/// `<root>/<entry>/<leaf>` for every entry of `root` that looks like a PostgreSQL install,
/// newest version first.
fn versioned_dirs(root: &str, leaf: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .trim_start_matches("postgresql@")
                .trim_start_matches("postgresql")
                .split('.')
                .next()
                .and_then(|major| major.parse().ok())?;
            Some((version, entry.path().join(leaf)))
        })
        .collect();
    dirs.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

/// How the cluster should trade durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults: committed means on disk.
    Durable,
    /// No fsync: for throwaway test clusters only.
    Throwaway,
}

/// The unprivileged user the server runs as, when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
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

/// A running cluster. Call [`Cluster::stop`] for a clean shutdown; if the process dies
/// instead, the kernel stops the server.
#[derive(Debug)]
pub struct Cluster {
    data_dir: PathBuf,
    child: Child,
}

/// How long a fast shutdown may take before the server is stopped at once.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The superuser that `initdb` creates, whatever OS user runs the server.
pub const SUPERUSER: &str = "postgres";

impl Cluster {
    /// Starts the cluster in `data_dir`, creating it first if the folder holds none.
    ///
    /// Blocks until the server accepts connections. Call it from a thread that lives as long
    /// as the server should: the server is stopped when the thread that started it exits.
    pub fn start(data_dir: &Path, durability: Durability) -> Result<Self, EmbeddedError> {
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
        let mut cluster = Self { data_dir, child };
        cluster.wait_until_ready(Duration::from_secs(30), &log_path)?;
        Ok(cluster)
    }

    /// The folder holding the server's socket: the `host` to connect to.
    pub fn socket_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection settings for `dbname` on this cluster.
    pub fn connection_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .user(SUPERUSER)
            .dbname(dbname);
        config
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
    pub fn stop(mut self) -> Result<(), EmbeddedError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), EmbeddedError> {
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

/// Creates a cluster in `data_dir`. initdb runs in a sibling folder that is renamed into place
/// only once it has finished, so a start interrupted during initdb (a kill, a power cut) leaves
/// no half-made cluster that every later start would trip over.
fn initialise(
    binaries: &Binaries,
    data_dir: &Path,
    durability: Durability,
    run_as: Option<&RunAs>,
) -> Result<(), EmbeddedError> {
    let name = data_dir.file_name().unwrap_or_default().to_string_lossy();
    let staging = data_dir.with_file_name(format!(".{name}.initdb"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    prepare_owned_folder(&staging, run_as)?;
    let mut initdb = binaries.command("initdb");
    initdb
        .arg("--pgdata")
        .arg(&staging)
        .args(["--username", SUPERUSER, "--auth", "trust"])
        .args(["--encoding", "UTF8", "--locale", "C"]);
    if durability == Durability::Throwaway {
        initdb.arg("--no-sync");
    }
    run_to_completion("initdb", &mut initdb, run_as)?;
    // An empty folder (say, made by hand) gives way; one with anything in it is not ours to remove.
    if data_dir.exists() {
        fs::remove_dir(data_dir).map_err(|_| EmbeddedError::NotACluster(data_dir.to_owned()))?;
    }
    fs::rename(&staging, data_dir).map_err(io_error(data_dir))
}

/// Creates `dir` for the server: reachable by the user it runs as, owned by it, and closed to
/// everyone else, as PostgreSQL insists.
fn prepare_owned_folder(dir: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    if let Some(user) = run_as {
        check_reachable(dir, user)?;
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(io_error(dir))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))
}

/// Removes a `postmaster.pid` left by a server that was killed. PostgreSQL would refuse to
/// start while it names a live process (after a reboot, an unrelated one may have that pid),
/// and our readiness check could mistake its "ready" for the new server's. A file naming a
/// live postgres that works in this folder is left alone: that server is really running.
fn remove_stale_lock_file(data_dir: &Path) -> Result<(), EmbeddedError> {
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

/// A cluster dropped without [`Cluster::stop`] (start-up failed after it started, say) is
/// stopped all the same, so a quick restart does not find it still shutting down.
impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            tracing::error!(%error, "the private PostgreSQL cluster did not stop cleanly");
        }
    }
}

/// Fails early, with a message that says what to do, when `user` cannot walk down to `dir`
/// (a project checked out under root's closed home folder, say); initdb would fail later with
/// a bare "permission denied".
fn check_reachable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let metadata = fs::metadata(ancestor).map_err(io_error(ancestor))?;
        let mode = metadata.mode();
        let searchable = mode & 0o001 != 0
            || (metadata.uid() == user.uid && mode & 0o100 != 0)
            || (metadata.gid() == user.gid && mode & 0o010 != 0);
        if !searchable {
            return Err(EmbeddedError::Unreachable {
                path: dir.to_owned(),
                uid: user.uid,
            });
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(io_error(path))
}

/// Spawns `command` as `run_as` (when set), set to receive SIGINT when this thread exits.
fn spawn_owned(command: &mut Command, run_as: Option<&RunAs>) -> std::io::Result<Child> {
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

fn run_to_completion(
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

/// Runs `work` on a connection to `config`'s server, then closes the connection and waits
/// until it is closed.
async fn with_admin_client<T>(
    config: &tokio_postgres::Config,
    work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let result = work(&client).await;
    drop(client);
    let _ = connection.await;
    result
}

/// Whether the server has a database called `dbname`.
pub async fn database_exists(
    config: &tokio_postgres::Config,
    dbname: &str,
) -> Result<bool, tokio_postgres::Error> {
    with_admin_client(config, async |client| {
        let row = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
            .await?;
        Ok(row.is_some())
    })
    .await
}

/// Creates an empty database `dbname`, first dropping one of that name when `replace` is set.
pub async fn create_database(
    config: &tokio_postgres::Config,
    dbname: &str,
    replace: bool,
) -> Result<(), tokio_postgres::Error> {
    let name = quote_identifier(dbname);
    with_admin_client(config, async |client| {
        // Separate statements: DROP and CREATE DATABASE refuse to run in a transaction, which
        // is what several statements in one string would be.
        if replace {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
        }
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
    })
    .await
}

/// Renames a database, waiting (up to a few seconds) for sessions that are still closing.
pub async fn rename_database(
    config: &tokio_postgres::Config,
    from: &str,
    to: &str,
) -> Result<(), tokio_postgres::Error> {
    let statement = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_identifier(from),
        quote_identifier(to)
    );
    with_admin_client(config, async |client| {
        let mut attempts = 0;
        loop {
            match client.batch_execute(&statement).await {
                Err(error)
                    if error.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                        && attempts < 50 =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                outcome => return outcome,
            }
        }
    })
    .await
}

/// Quotes an SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "orders-binaries-test-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn binaries_are_found_only_where_both_initdb_and_postgres_are() {
        let only_initdb = scratch_dir("only-initdb");
        fs::write(only_initdb.join("initdb"), "").unwrap();
        let both = scratch_dir("both");
        fs::write(both.join("initdb"), "").unwrap();
        fs::write(both.join("postgres"), "").unwrap();

        let found = Binaries::find_in([only_initdb.clone(), both.clone()]).unwrap();

        assert_eq!(found.dir, both);
        let _ = fs::remove_dir_all(only_initdb);
        let _ = fs::remove_dir_all(both);
    }

    #[test]
    fn without_binaries_the_error_says_what_to_install_or_set() {
        let empty = scratch_dir("empty");

        let error = Binaries::find_in([empty.clone()]).unwrap_err();

        let message = error.to_string();
        assert!(matches!(error, EmbeddedError::BinariesNotFound));
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("brew install"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
        let _ = fs::remove_dir_all(empty);
    }

    #[test]
    fn versioned_installs_are_tried_newest_first() {
        let root = scratch_dir("versions");
        for name in ["13", "postgresql@16", "15", "not-a-version"] {
            fs::create_dir_all(root.join(name).join("bin")).unwrap();
        }

        let dirs = versioned_dirs(root.to_str().unwrap(), "bin");

        assert_eq!(
            dirs,
            [
                root.join("postgresql@16/bin"),
                root.join("15/bin"),
                root.join("13/bin")
            ]
        );
        let _ = fs::remove_dir_all(root);
    }
}
