//! A private PostgreSQL cluster, run from the machine's own server binaries, for when no
//! `DATABASE_URL` is given (and for the test suite).
//!
//! The cluster lives in a data folder of ours and listens only on a Unix socket inside that
//! folder, so it can clash with no other server. PostgreSQL refuses to run as root; when we
//! are root, the server runs as an unprivileged system user (`postgres`, else `nobody`).
//! The server is a child process that gets SIGINT (PostgreSQL's "fast shutdown") when its
//! parent dies, so a crashed or killed parent never leaves it running.
//!
//! [`Cluster`] is the whole interface; the parts behind it, by job:
//!
//! - `binaries`: finding `initdb` and `postgres` on this machine.
//! - `data_folder`: the cluster's data folder, and creating the cluster in it with initdb.
//! - `supervisor`: running the server process, waiting until it is ready, stopping it.
//! - `process`: spawning children as the unprivileged server user so they do not outlive us.
//! - `lock_file`: recovering from a killed server's lock file, never removing a live one's.
//! - `admin`: the administrative SQL start-up needs ([`database_exists`], [`create_database`],
//!   [`rename_database`], [`quote_identifier`]).
//!
//! Nothing here knows the application's schema or speaks HTTP.

mod admin;
mod binaries;
mod data_folder;
mod lock_file;
mod process;
mod supervisor;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use admin::{create_database, database_exists, quote_identifier, rename_database};

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

/// How the cluster should trade durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults: committed means on disk.
    Durable,
    /// No fsync: for throwaway test clusters only.
    Throwaway,
}

/// How long a fast shutdown may take before the server is stopped at once.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The superuser that `initdb` creates, whatever OS user runs the server.
pub const SUPERUSER: &str = "postgres";

/// A running cluster. Call [`Cluster::stop`] for a clean shutdown; if the process dies
/// instead, the kernel stops the server.
#[derive(Debug)]
pub struct Cluster {
    server: supervisor::Server,
}

impl Cluster {
    /// Starts the cluster in `data_dir`, creating it first if the folder holds none.
    ///
    /// Blocks until the server accepts connections. Call it from a thread that lives as long
    /// as the server should: the server is stopped when the thread that started it exits.
    pub fn start(data_dir: &Path, durability: Durability) -> Result<Self, EmbeddedError> {
        let server = supervisor::Server::start(data_dir, durability)?;
        Ok(Self { server })
    }

    /// The folder holding the server's socket: the `host` to connect to.
    pub fn socket_dir(&self) -> &Path {
        &self.server.data_dir
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

    /// Stops the server with a fast shutdown (open transactions are rolled back, everything
    /// committed is kept) and waits for it to exit. A server that has not stopped after
    /// [`STOP_TIMEOUT`] gets an immediate shutdown, which recovers from its log on next start.
    pub fn stop(mut self) -> Result<(), EmbeddedError> {
        self.server.shut_down()
    }
}

/// A cluster dropped without [`Cluster::stop`] (start-up failed after it started, say) is
/// stopped all the same, so a quick restart does not find it still shutting down.
impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.server.shut_down() {
            tracing::error!(%error, "the private PostgreSQL cluster did not stop cleanly");
        }
    }
}
