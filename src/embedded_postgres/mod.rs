//! A private PostgreSQL cluster, run from the machine's own server binaries, for when no
//! `DATABASE_URL` is given (and for the test suite).
//!
//! The cluster lives in a data folder of ours and listens only on a Unix socket inside that
//! folder, so it can clash with no other server. It is private to the service: every
//! connection must give the superuser's password, which is kept in the data folder for the
//! server user alone; the server gets none of our environment; and PostgreSQL, which refuses
//! to run as root, then runs as a system user of its own (`orders-postgres`), never as one
//! that other processes share (`postgres`, `nobody`).
//! The server is a child process that gets SIGINT (PostgreSQL's "fast shutdown") when we are
//! gone (on Linux when the thread that supervises it ends, elsewhere through a watchdog
//! process), so a crashed or killed parent never leaves it running.
//!
//! [`Cluster`] is the whole interface; the parts behind it, by job:
//!
//! - `binaries`: finding `initdb` and `postgres` on this machine, and running them with an
//!   environment of their own.
//! - `server_user`: the user the server runs as when we are root, created when missing.
//! - `data_folder`: where the cluster's files live (elsewhere, linked, when the server user
//!   cannot reach the configured folder), and creating the cluster there with initdb.
//! - `password`: the superuser's password, set before the server first starts, required for
//!   every connection, and kept in [`PASSWORD_FILE`].
//! - `supervisor`: the cluster's own thread, which runs the server process, waits until it is
//!   ready, and stops it.
//! - `process`: spawning children as the unprivileged server user so they do not outlive us
//!   (PDEATHSIG on Linux, a watchdog process on other Unixes).
//! - `lock_file`: recovering from a lock file whose pid went to another process, never
//!   removing a live server's, and leaving a dead one's to PostgreSQL.
//! - `admin`: the administrative SQL start-up needs ([`database_exists`], [`create_database`],
//!   [`rename_database`], [`quote_identifier`]).
//!
//! Nothing here knows the application's schema or speaks HTTP.

mod admin;
mod binaries;
mod data_folder;
mod lock_file;
mod password;
mod process;
mod server_user;
mod supervisor;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use admin::{create_database, database_exists, quote_identifier, rename_database};
pub use password::PASSWORD_FILE;
pub use server_user::SERVER_USER;

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
        "running as root, PostgreSQL must run as the system user orders-postgres, which does not \
         exist and could not be created ({detail}). Create it (Linux: `useradd --system \
         --user-group --home-dir /var/lib/orders-postgres --shell /usr/sbin/nologin \
         orders-postgres && install -d -m 700 -o orders-postgres -g orders-postgres \
         /var/lib/orders-postgres`), run this as a user other than root, or set DATABASE_URL \
         to use a server you already have"
    )]
    NoServerUser { detail: String },
    #[error(
        "the user {name}, whom PostgreSQL is to run as, has uid {uid}, which is root's or nobody's; \
         it must be a user no other process shares: give {name} a uid of its own, or remove it \
         to have it created anew, or run this as a user other than root"
    )]
    SharedServerUser { name: String, uid: u32 },
    #[error(
        "the cluster in {path} belongs to {owner}, not to {user}, whom PostgreSQL runs as (most \
         likely an older version ran it as a user other processes share, with no password). To \
         keep its data, look it over, give it to {user} (`chown -R {user}: {path}`) and start \
         again, which gives it a password; to start afresh, move it away"
    )]
    ForeignCluster {
        path: PathBuf,
        owner: String,
        user: String,
    },
    #[error(
        "the socket path {0} is longer than a Unix socket allows (107 bytes); choose a shorter data folder"
    )]
    SocketPathTooLong(PathBuf),
    #[error(
        "PostgreSQL runs as the unprivileged user with uid {uid}, who cannot reach {path}: \
         a folder above it is closed to other users, and files already there are not moved. \
         Choose a data folder it can reach (--data-dir or ORDERS_DATA_DIR), for example \
         under /tmp, or move those files away so the cluster can be kept elsewhere"
    )]
    Unreachable { path: PathBuf, uid: u32 },
    #[error(
        "{path} should be a folder of the PostgreSQL server user's (uid {uid}) closed to everyone \
         else, but something else made it or opened it to others; remove it, or choose a data folder that user can reach \
         (--data-dir or ORDERS_DATA_DIR)"
    )]
    ForeignFolder { path: PathBuf, uid: u32 },
    #[error(
        "the data folder {0} holds files but no PostgreSQL cluster; move them away or choose another --data-dir"
    )]
    NotACluster(PathBuf),
    #[error(
        "{lock_file} names a live process ({pid}), most likely a PostgreSQL server still running \
         on this data folder: stop it, or remove the file if that process is no server"
    )]
    AlreadyRunning { lock_file: PathBuf, pid: i32 },
    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },
    #[error("PostgreSQL did not become ready within {0:?}; its log is {1}")]
    NotReady(Duration, PathBuf),
    #[error(
        "the thread that supervises PostgreSQL ended unexpectedly; look for a panic in the log above"
    )]
    SupervisorLost,
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

/// How the cluster should trade durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults: committed means on disk.
    Durable,
    /// No fsync: for throwaway test clusters only.
    Throwaway,
}

/// How long a fast shutdown may take before the server is asked for an immediate one.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an immediate shutdown may take before the server and its processes are killed.
pub const IMMEDIATE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The superuser that `initdb` creates, whatever OS user runs the server.
pub const SUPERUSER: &str = "postgres";

/// A running cluster, kept by a thread of its own (so nothing here blocks an async runtime).
///
/// Call [`Cluster::stop`] for a clean shutdown and to know it has finished. A cluster that is
/// dropped instead is stopped by its thread in the background. If the process dies first, the
/// server is stopped all the same: it gets SIGINT when its supervisor thread is gone (Linux)
/// or when the process is (elsewhere).
#[derive(Debug)]
pub struct Cluster {
    data_dir: PathBuf,
    /// Connection settings for the superuser, password included (their `Debug` hides it).
    superuser: tokio_postgres::Config,
    supervisor: supervisor::Supervisor,
}

impl Cluster {
    /// Starts the cluster in `data_dir`, creating it first if the folder holds none, and
    /// returns once the server accepts connections.
    pub async fn start(data_dir: &Path, durability: Durability) -> Result<Self, EmbeddedError> {
        Self::start_with_stop_bounds(data_dir, durability, supervisor::StopBounds::DEFAULT, &[])
            .await
    }

    /// [`Cluster::start`] with more server settings, each passed as `-c name=value` after
    /// ours, so they win: for tests that need a server on TCP (`listen_addresses`, `port`) or
    /// with TLS (`ssl`, `ssl_cert_file`, `ssl_key_file`). A `port` moves the Unix socket too,
    /// to `.s.PGSQL.<port>`: connect with that port.
    pub async fn start_with_settings(
        data_dir: &Path,
        durability: Durability,
        settings: &[(&str, &str)],
    ) -> Result<Self, EmbeddedError> {
        Self::start_with_stop_bounds(
            data_dir,
            durability,
            supervisor::StopBounds::DEFAULT,
            settings,
        )
        .await
    }

    /// [`Cluster::start_with_settings`], with each step of the eventual shutdown bounded by
    /// `stop_bounds` (tests shorten them to see every step taken).
    async fn start_with_stop_bounds(
        data_dir: &Path,
        durability: Durability,
        stop_bounds: supervisor::StopBounds,
        settings: &[(&str, &str)],
    ) -> Result<Self, EmbeddedError> {
        let settings = settings
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let (supervisor, data_dir) =
            supervisor::Supervisor::start(data_dir, durability, stop_bounds, settings).await?;
        // The server was not started without it: it is there.
        let superuser = superuser_config(&data_dir)?;
        Ok(Self {
            data_dir,
            superuser,
            supervisor,
        })
    }

    /// The folder holding the server's socket: the `host` to connect to.
    pub fn socket_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection settings for `dbname` on this cluster, as its superuser, with its password.
    pub fn connection_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = self.superuser.clone();
        config.dbname(dbname);
        config
    }

    /// Stops the server with a fast shutdown (open transactions are rolled back, everything
    /// committed is kept) and waits for it to exit. A server that has not stopped after
    /// [`STOP_TIMEOUT`] gets an immediate shutdown, which recovers from its log on next start;
    /// one still running [`IMMEDIATE_STOP_TIMEOUT`] after that is killed with its processes.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        self.supervisor.stop().await
    }
}

/// Connection settings for `dbname` on the cluster in `data_dir`, which another process may
/// be running; reading its password takes being the server user or root.
pub fn connection_config(
    data_dir: &Path,
    dbname: &str,
) -> Result<tokio_postgres::Config, EmbeddedError> {
    let mut config = superuser_config(data_dir)?;
    config.dbname(dbname);
    Ok(config)
}

fn superuser_config(data_dir: &Path) -> Result<tokio_postgres::Config, EmbeddedError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(data_dir)
        .user(SUPERUSER)
        .password(password::read_password(data_dir)?);
    Ok(config)
}

/// Whether the cluster in `data_dir` has a server's socket: someone may be running it.
pub fn has_socket(data_dir: &Path) -> bool {
    data_dir.join(".s.PGSQL.5432").exists()
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::*;

    /// A folder for one test's cluster under the system temp folder (which the unprivileged
    /// server user can reach), removed when the test ends.
    pub(super) struct ScratchDir(pub(super) PathBuf);

    impl ScratchDir {
        pub(super) fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("orders-embedded-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn accepts_connections(cluster: &Cluster) -> bool {
        database_exists(&cluster.connection_config("postgres"), "postgres")
            .await
            .is_ok_and(|exists| exists)
    }

    #[tokio::test]
    async fn starting_and_stopping_a_cluster_leave_the_runtime_free_to_run_other_tasks() {
        let dir = ScratchDir::new("runtime-free");
        // The test's runtime has one thread: a blocking start or stop would freeze this task.
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = Arc::clone(&ticks);
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });

        let cluster = Cluster::start(&dir.0, Durability::Throwaway).await.unwrap();
        let ticks_after_start = ticks.load(Ordering::Relaxed);
        cluster.stop().await.unwrap();
        let ticks_after_stop = ticks.load(Ordering::Relaxed);

        ticker.abort();
        assert!(
            ticks_after_start > 0,
            "the runtime was blocked during start"
        );
        assert!(
            ticks_after_stop > ticks_after_start,
            "the runtime was blocked during stop"
        );
    }

    /// The pid on the first line of the server's lock file, while it runs.
    fn server_pid(data_dir: &Path) -> nix::unistd::Pid {
        let contents = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
        nix::unistd::Pid::from_raw(contents.lines().next().unwrap().parse().unwrap())
    }

    #[tokio::test]
    async fn a_server_that_ignores_shutdown_requests_is_killed_with_its_processes_after_the_bounds()
    {
        use nix::{
            errno::Errno,
            sys::signal::{Signal, kill, killpg},
        };

        let dir = ScratchDir::new("sigkill");
        let bounds = supervisor::StopBounds {
            fast: Duration::from_millis(300),
            immediate: Duration::from_millis(300),
        };
        let cluster = Cluster::start_with_stop_bounds(&dir.0, Durability::Throwaway, bounds, &[])
            .await
            .unwrap();
        let server = server_pid(&dir.0);
        // A stopped process leaves SIGINT and SIGQUIT pending; only SIGKILL acts on it.
        kill(server, Signal::SIGSTOP).unwrap();

        let started = std::time::Instant::now();
        cluster.stop().await.unwrap();
        let took = started.elapsed();

        assert!(
            took >= bounds.fast + bounds.immediate,
            "stopped in {took:?}"
        );
        assert!(took < Duration::from_secs(10), "stopped in {took:?}");
        assert_eq!(kill(server, None), Err(Errno::ESRCH), "the server is gone");
        // Its backends, orphaned by the kill, are reaped by init in a moment.
        let mut group = killpg(server, None);
        while group.is_ok() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            group = killpg(server, None);
        }
        assert_eq!(group, Err(Errno::ESRCH), "none of its processes is left");
        // What a kill leaves behind (its lock file) does not stop the next start.
        let restarted = Cluster::start(&dir.0, Durability::Throwaway).await.unwrap();
        assert!(accepts_connections(&restarted).await);
        restarted.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_second_start_through_a_symlink_to_a_running_clusters_folder_leaves_it_alone() {
        let dir = ScratchDir::new("second-start");
        let running = Cluster::start(&dir.0.join("cluster"), Durability::Throwaway)
            .await
            .unwrap();
        let link = dir.0.join("link");
        std::os::unix::fs::symlink(dir.0.join("cluster"), &link).unwrap();

        let second = Cluster::start(&link, Durability::Throwaway).await;

        assert!(
            matches!(second, Err(EmbeddedError::AlreadyRunning { .. })),
            "{second:?}"
        );
        assert!(
            dir.0.join("cluster/postmaster.pid").exists(),
            "the running server's lock file is kept"
        );
        assert!(accepts_connections(&running).await);
        running.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_cluster_outlives_the_thread_that_started_it() {
        let dir = ScratchDir::new("outlives");
        let data_dir = dir.0.clone();

        let cluster = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Cluster::start(&data_dir, Durability::Throwaway))
        })
        .join()
        .unwrap()
        .unwrap();
        // Had that thread forked the server, PDEATHSIG would have begun its shutdown by now.
        tokio::time::sleep(Duration::from_millis(500)).await;

        assert!(accepts_connections(&cluster).await);
        cluster.stop().await.unwrap();
    }

    /// Settings for the cluster's maintenance database as its superuser, but without the
    /// password: what anyone who can reach the socket could try.
    fn without_password(cluster: &Cluster) -> tokio_postgres::Config {
        let mut bare = tokio_postgres::Config::new();
        bare.host_path(cluster.socket_dir())
            .user(SUPERUSER)
            .dbname("postgres");
        bare
    }

    async fn connects(config: &tokio_postgres::Config) -> Result<(), tokio_postgres::Error> {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn a_cluster_refuses_connections_without_its_password_on_its_socket_and_over_tcp() {
        let dir = ScratchDir::new("password");
        let port = free_port().to_string();
        let cluster = Cluster::start_with_settings(
            &dir.0,
            Durability::Throwaway,
            &[("listen_addresses", "127.0.0.1"), ("port", &port)],
        )
        .await
        .unwrap();
        let port: u16 = port.parse().unwrap();
        let mut socket = without_password(&cluster);
        socket.port(port);
        let mut tcp = tokio_postgres::Config::new();
        tcp.host("127.0.0.1")
            .port(port)
            .user(SUPERUSER)
            .dbname("postgres");

        let mut outcomes = Vec::new();
        for bare in [socket, tcp] {
            let mut wrong = bare.clone();
            wrong.password("not-the-password");
            let mut right = bare.clone();
            right.password(password::read_password(cluster.socket_dir()).unwrap());
            outcomes.push((
                connects(&bare).await,
                connects(&wrong).await,
                connects(&right).await,
            ));
        }

        cluster.stop().await.unwrap();
        for (bare, wrong, right) in outcomes {
            assert!(bare.is_err(), "connected with no password");
            let wrong = wrong.expect_err("connected with a wrong password");
            assert_eq!(
                wrong.code(),
                Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
                "{wrong}"
            );
            right.unwrap();
        }
    }

    #[tokio::test]
    async fn the_password_file_can_be_read_by_the_server_user_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = ScratchDir::new("password-file");
        let cluster = Cluster::start(&dir.0, Durability::Throwaway).await.unwrap();
        let server_user = server_user::run_as()
            .unwrap()
            .map_or(nix::unistd::Uid::effective().as_raw(), |user| user.uid);

        let file = std::fs::symlink_metadata(cluster.socket_dir().join(PASSWORD_FILE)).unwrap();
        let works = connects(&cluster.connection_config("postgres")).await;

        cluster.stop().await.unwrap();
        assert!(file.is_file());
        assert_eq!(file.mode() & 0o777, 0o600);
        assert_eq!(file.uid(), server_user);
        works.unwrap();
    }

    /// `uid` of the process `pid` as `/proc/<pid>/status` says: its real, effective, saved and
    /// filesystem uids, which must all be the same one.
    fn uids_of(pid: i32) -> Vec<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .map(|uid| uid.parse().unwrap())
            .collect()
    }

    /// The pids of `parent`'s children (the server's backends and helpers).
    fn children_of(parent: i32) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let (_, rest) = stat.rsplit_once(')')?;
                        rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                    })
                    == Some(parent)
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_server_and_its_processes_run_as_the_server_user_and_never_as_nobody() {
        let dir = ScratchDir::new("server-user");
        let cluster = Cluster::start(&dir.0, Durability::Throwaway).await.unwrap();
        let server = server_pid(&dir.0).as_raw();
        let expected = match server_user::run_as().unwrap() {
            Some(user) => {
                assert_eq!(user.name, SERVER_USER);
                user.uid
            }
            None => nix::unistd::Uid::effective().as_raw(),
        };
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .map(|nobody| nobody.uid.as_raw());

        let mut processes = vec![server];
        processes.extend(children_of(server));
        let uids: Vec<Vec<u32>> = processes.iter().map(|&pid| uids_of(pid)).collect();

        cluster.stop().await.unwrap();
        assert!(processes.len() > 1, "the server has its helper processes");
        for uids in uids {
            assert_eq!(uids, [expected; 4]);
            assert_ne!(Some(expected), nobody);
        }
    }

    /// Runs `statement` on the stopped cluster in `data_dir` in single-user mode, as its user.
    fn run_single_user(data_dir: &Path, run_as: Option<&server_user::RunAs>, statement: &str) {
        use std::io::Write;
        let mut postgres = binaries::Binaries::find().unwrap().command("postgres");
        postgres
            .arg("--single")
            .arg("-D")
            .arg(data_dir)
            .args(["-c", "exit_on_error=on", SUPERUSER])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = process::spawn_owned(&mut postgres, run_as).unwrap();
        writeln!(child.stdin.take().unwrap(), "{statement}").unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[tokio::test]
    async fn a_cluster_an_older_version_made_with_trust_alone_is_given_a_password_and_keeps_its_data()
     {
        let dir = ScratchDir::new("trust-upgrade");
        let run_as = server_user::run_as().unwrap();
        let data_dir = data_folder::locate(&dir.0, run_as.as_ref()).unwrap();
        // What the older version left: initdb's cluster with trust on every line, no password
        // file, and data of its own.
        data_folder::initialise(
            &binaries::Binaries::find().unwrap(),
            &data_dir,
            Durability::Throwaway,
            run_as.as_ref(),
        )
        .unwrap();
        run_single_user(&data_dir, run_as.as_ref(), "CREATE DATABASE kept");
        let hba_before = std::fs::read_to_string(data_dir.join("pg_hba.conf")).unwrap();
        assert!(hba_before.contains("trust"), "{hba_before}");
        assert!(!data_dir.join(PASSWORD_FILE).exists());

        let cluster = Cluster::start(&dir.0, Durability::Throwaway).await.unwrap();

        let kept = database_exists(&cluster.connection_config("postgres"), "kept").await;
        let bare = connects(&without_password(&cluster)).await;
        let hba_after = std::fs::read_to_string(data_dir.join("pg_hba.conf")).unwrap();
        cluster.stop().await.unwrap();
        assert!(kept.unwrap(), "the data is kept");
        assert!(bare.is_err(), "connected with no password");
        assert!(!hba_after.contains("trust"), "{hba_after}");
    }

    #[tokio::test]
    async fn a_cluster_belonging_to_another_user_is_refused_with_what_to_do_and_left_alone() {
        use std::os::unix::fs::MetadataExt;
        let Some(user) = server_user::run_as().unwrap() else {
            eprintln!("skipped: only root can give a folder to another user");
            return;
        };
        let dir = ScratchDir::new("foreign");
        // As an older version left one it ran as `nobody`, say: another user's files.
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join("PG_VERSION"), "15\n").unwrap();
        std::os::unix::fs::chown(&dir.0, Some(4_000_000), Some(4_000_000)).unwrap();

        let outcome = Cluster::start(&dir.0, Durability::Throwaway).await;

        let error = outcome.unwrap_err();
        assert!(
            matches!(error, EmbeddedError::ForeignCluster { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        let chown = format!("chown -R {}: {}", user.name, dir.0.display());
        assert!(message.contains(&chown), "{message}");
        assert_eq!(std::fs::metadata(&dir.0).unwrap().uid(), 4_000_000);
        assert!(!dir.0.join("server.log").exists(), "no server was started");
        assert!(!dir.0.join(PASSWORD_FILE).exists());
        assert!(!dir.0.join("pg_hba.conf").exists());
    }
}
