//! The test PostgreSQL: one server per test process, a template database migrated once, and a
//! database of each test's own, copied from it.
//!
//! The server is a private cluster started with the same code the binary uses, or the server
//! in `TEST_DATABASE_URL`. Copying the template (`CREATE DATABASE ... TEMPLATE`) is what lets
//! tests run in parallel without seeing each other's rows; each copy is dropped again with its
//! [`TestDatabase`] guard, so the server is left as it was found. Nothing here knows about HTTP.

use std::{
    path::PathBuf,
    sync::{Once, OnceLock, mpsc},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{self, Signal},
    unistd::Pid,
};
use orders::{
    embedded_postgres::{Cluster, Durability, quote_identifier},
    storage,
};
use tokio_postgres::error::SqlState;

/// Where the test databases live: a server and the template to copy.
struct TestServer {
    /// Connection settings for the server's maintenance database.
    admin: tokio_postgres::Config,
    template: String,
    /// Whether the server is the one in `TEST_DATABASE_URL`, which outlives this process.
    shared: bool,
}

/// How long a connection or a statement that cleans up may take. A server that has hung
/// must fail the test (or be reported at exit), not hang the whole run.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

static TEST_SERVER: OnceLock<TestServer> = OnceLock::new();

/// How long a session may take to authenticate on the private test cluster (PostgreSQL's
/// default is a minute), well past what a password exchange takes and well inside
/// [`CLEANUP_TIMEOUT`].
///
/// A session still authenticating holds up every DROP DATABASE on its server (PostgreSQL
/// waits for each backend to take note of a drop, and one authenticating cannot), and a
/// test's drop blocks the test's runtime, which may be the very client of that session: an
/// app under test opening a connection in the background as the test ends. The app's own
/// background connections are waited for when it starts (see `spawn_app`); this bounds the
/// rest, so that such a drop is late rather than failed.
const AUTHENTICATION_TIMEOUT: &str = "3s";

fn test_server() -> &'static TestServer {
    // Never dropped: the cluster runs until the process exits, which stops it.
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    TEST_SERVER.get_or_init(|| {
        orders::telemetry::init_for_tests();
        // Tests get here from inside their own runtime, which cannot block on a future: set up
        // on a thread with a runtime of its own.
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("test-postgres".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let shared = std::env::var_os("TEST_DATABASE_URL").is_some();
                let mut admin: tokio_postgres::Config = match std::env::var("TEST_DATABASE_URL") {
                    Ok(url) => url
                        .parse()
                        .expect("TEST_DATABASE_URL is a connection string"),
                    Err(_) => {
                        let cluster = runtime
                            .block_on(Cluster::start_with_settings(
                                &cluster_dir(),
                                Durability::Throwaway,
                                &[("authentication_timeout", AUTHENTICATION_TIMEOUT)],
                            ))
                            .expect("the test cluster starts");
                        CLUSTER
                            .get_or_init(|| cluster)
                            .connection_config("postgres")
                    }
                };
                admin.connect_timeout(CLEANUP_TIMEOUT);
                // The pid alone is not enough on a shared server: two CI jobs in containers of
                // their own can have the same one, and each drops its template by name.
                let template = format!(
                    "orders_template_{}_{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                );
                runtime.block_on(create_template(&admin, &template));
                sender
                    .send(TestServer {
                        admin,
                        template,
                        shared,
                    })
                    .unwrap();
            })
            .expect("spawn the test-postgres thread");
        receiver.recv().expect("the test database server starts")
    })
}

/// What every run's folder is called before its pid.
const RUN_DIR_PREFIX: &str = "orders-test-";

/// A new folder of this run's own under the system temp folder (which the unprivileged user
/// the cluster runs as can reach), with the cluster's folder inside it. Its name is random and
/// it is created fresh, failing if anything is there already, so nothing planted in the shared
/// temp folder can be made to stand for it. Folders of earlier runs whose process is gone are
/// removed first.
fn cluster_dir() -> PathBuf {
    remove_dirs_of_finished_runs();
    let run_dir = std::env::temp_dir().join(format!(
        "{RUN_DIR_PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir(&run_dir)
        .unwrap_or_else(|error| panic!("create {}: {error}", run_dir.display()));
    // Let the unprivileged server user reach its own folder inside. Checked first, though
    // just created: as root, a chmod through a link would open up whatever it points at.
    let created = std::fs::symlink_metadata(&run_dir).unwrap();
    assert!(created.is_dir(), "{} is a folder", run_dir.display());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_dir.join("cluster")
}

/// Removes the folders of earlier runs whose process no longer exists. One whose process
/// still runs, or cannot be told (another user's, say), is left alone.
fn remove_dirs_of_finished_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        // Only real folders: remove_dir_all does not follow a link, but there is no reason
        // to touch one either.
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if gone && is_dir && pid != std::process::id() as i32 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

async fn create_template(admin: &tokio_postgres::Config, template: &str) {
    let client = connect(admin).await;
    // Separate statements: a multi-statement string runs as one transaction, and
    // DROP/CREATE DATABASE refuse to run inside one.
    for statement in ["DROP DATABASE IF EXISTS", "CREATE DATABASE"] {
        client
            .batch_execute(&format!("{statement} {}", quote_identifier(template)))
            .await
            .expect("create the template database");
    }
    let mut config = admin.clone();
    config.dbname(template);
    let pool = storage::connect_pool(config, 1);
    storage::migrations::run(&pool)
        .await
        .expect("migrate the template");
    pool.close();
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(connection);
    client
}

/// A database of one test's own. Dropping the guard drops the database (`WITH (FORCE)`,
/// which ends any session still in it), so a run leaves none behind, on the private cluster
/// or on the server in `TEST_DATABASE_URL`.
pub struct TestDatabase {
    name: String,
    config: tokio_postgres::Config,
}

impl TestDatabase {
    /// Connection settings for this database.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = test_server().admin.clone();
        let name = self.name.clone();
        let Err(error) = run_to_completion(async move { drop_database(&admin, &name).await })
        else {
            return;
        };
        let message = format!("drop the test database {}: {error}", self.name);
        // A second panic while the test is already failing would abort the whole run.
        if std::thread::panicking() {
            eprintln!("could not {message}");
        } else {
            panic!("{message}");
        }
    }
}

/// Runs `work` on a thread of its own with a runtime of its own, and waits for it: for the
/// database calls that must finish where nothing can await (`Drop`, the exit handler).
/// Blocking on the caller's runtime instead would panic inside a tokio test.
fn run_to_completion(work: impl Future<Output = Result<(), String>> + Send) -> Result<(), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| block_on_a_runtime_of_its_own(work))
            .join()
            .unwrap_or_else(|_| Err("the thread running it panicked".to_owned()))
    })
}

fn block_on_a_runtime_of_its_own(
    work: impl Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?
        .block_on(work)
}

/// Drops the database `name`, giving up after [`CLEANUP_TIMEOUT`] (the connection's own
/// timeout bounds connecting; this bounds the statement and the goodbye too).
async fn drop_database(admin: &tokio_postgres::Config, name: &str) -> Result<(), String> {
    let work = async {
        let (client, connection) = admin.connect(tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let dropped = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(name)
            ))
            .await;
        drop(client);
        let _ = connection.await;
        dropped
    };
    match tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
        Ok(dropped) => dropped.map_err(|error| error.to_string()),
        Err(_) => Err(format!("no answer within {CLEANUP_TIMEOUT:?}")),
    }
}

/// A fresh, migrated, empty database of the test's own.
pub async fn fresh_database() -> TestDatabase {
    let server = test_server();
    if server.shared {
        static DROP_TEMPLATE_AT_EXIT: Once = Once::new();
        DROP_TEMPLATE_AT_EXIT.call_once(drop_template_at_exit);
    }
    create_database(&server.template).await
}

/// Arranges for the template on the server in `TEST_DATABASE_URL` to be dropped when the test
/// process exits. The test harness has no hook for the end of a run and statics are never
/// dropped, so this asks the C library (`atexit`), which runs the handler whether the run
/// passed or failed. A process that is killed runs no handler and leaves its template
/// (`orders_template_<pid>_<random>`) behind.
///
/// Not done on the private cluster: it stops with the process, template and all, and work
/// inside `exit()` is best kept to what cannot be done otherwise.
fn drop_template_at_exit() {
    unsafe extern "C" {
        fn atexit(handler: extern "C" fn()) -> std::ffi::c_int;
    }
    extern "C" fn drop_template() {
        let Some(server) = TEST_SERVER.get() else {
            return;
        };
        // Run on this thread, with no other spawned: `exit()` was called where nothing awaits,
        // unless a test called it from inside a runtime, where blocking would panic.
        let dropped = if tokio::runtime::Handle::try_current().is_ok() {
            Err("exit was called inside a tokio runtime".to_owned())
        } else {
            block_on_a_runtime_of_its_own(drop_database(&server.admin, &server.template))
        };
        if let Err(error) = dropped {
            // Not eprintln!: a panic here, at exit and across the C boundary, would abort.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "could not drop the template database {}: {error}",
                server.template
            );
        }
    }
    // SAFETY: `atexit` only stores the address of `drop_template`, a function with no
    // arguments that lives as long as the program.
    let registered = unsafe { atexit(drop_template) } == 0;
    assert!(registered, "register the handler that drops the template");
}

/// A database of the test's own with nothing in it, not even the schema.
pub async fn unmigrated_database() -> TestDatabase {
    create_database("template0").await
}

/// How long to wait for the template's last session to go away.
const TEMPLATE_IN_USE_WAIT: Duration = Duration::from_secs(5);

async fn create_database(template: &str) -> TestDatabase {
    let server = test_server();
    let name = format!("orders_test_{}", uuid::Uuid::new_v4().simple());
    let client = connect(&server.admin).await;
    let create = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        quote_identifier(&name),
        quote_identifier(template)
    );
    // The template's last connection may take a moment to go away after migrating it, and
    // until it has, PostgreSQL refuses to copy it ("source database is being accessed by
    // other users"). That is worth waiting for; any other error is not.
    let started = Instant::now();
    loop {
        match client.batch_execute(&create).await {
            Ok(()) => break,
            Err(error)
                if error.code() == Some(&SqlState::OBJECT_IN_USE)
                    && started.elapsed() < TEMPLATE_IN_USE_WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("create a test database from {template}: {error}"),
        }
    }
    let mut config = server.admin.clone();
    config.dbname(&name);
    TestDatabase { name, config }
}

/// `config` as a key=value connection string, the form `DATABASE_URL` also accepts.
pub fn connection_string(config: &tokio_postgres::Config) -> String {
    let mut parts = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        match host {
            tokio_postgres::config::Host::Tcp(name) => parts.push(format!("host={name}")),
            tokio_postgres::config::Host::Unix(path) => {
                parts.push(format!("host={}", path.display()))
            }
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={user}"));
    }
    if let Some(password) = config.get_password() {
        parts.push(format!("password={}", String::from_utf8_lossy(password)));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={dbname}"));
    }
    parts.join(" ")
}

/// A PostgreSQL cluster of one test's own, for the faults that would disturb every other test
/// on a shared server: stopping it, pausing its processes, killing its server. It holds one
/// migrated database, [`PrivateCluster::DATABASE`]; it is stopped when dropped.
pub struct PrivateCluster {
    /// The folder it was started in, to start it there again.
    requested_dir: PathBuf,
    /// Where its files and socket are (the same folder, unless the server user cannot reach it).
    data_dir: PathBuf,
    /// How to reach [`PrivateCluster::DATABASE`], password included, while it runs or not.
    config: tokio_postgres::Config,
    cluster: Option<Cluster>,
}

impl PrivateCluster {
    pub const DATABASE: &str = "orders";

    /// Starts a cluster in a folder of its own, with [`PrivateCluster::DATABASE`] migrated.
    pub async fn start() -> Self {
        orders::telemetry::init_for_tests();
        let requested_dir = cluster_dir();
        let cluster = Cluster::start(&requested_dir, Durability::Throwaway)
            .await
            .expect("the private cluster starts");
        let data_dir = cluster.socket_dir().to_owned();
        let client = connect(&cluster.connection_config("postgres")).await;
        client
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                quote_identifier(Self::DATABASE)
            ))
            .await
            .expect("create the private cluster's database");
        let pool = storage::connect_pool(cluster.connection_config(Self::DATABASE), 1);
        storage::migrations::run(&pool)
            .await
            .expect("migrate the private cluster's database");
        pool.close();
        Self {
            requested_dir,
            data_dir,
            config: cluster.connection_config(Self::DATABASE),
            cluster: Some(cluster),
        }
    }

    /// Connection settings for [`PrivateCluster::DATABASE`].
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// Stops the server (a fast shutdown) and waits until it has exited.
    pub async fn stop(&mut self) {
        let cluster = self.cluster.take().expect("the cluster is running");
        cluster.stop().await.expect("the private cluster stops");
    }

    /// Starts the stopped server again, on the same folder and socket; returns once it
    /// accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.cluster.is_none(), "the cluster is stopped");
        let cluster = Cluster::start(&self.requested_dir, Durability::Throwaway)
            .await
            .expect("the private cluster starts again");
        assert_eq!(cluster.socket_dir(), self.data_dir, "the same socket");
        self.cluster = Some(cluster);
    }

    /// The server's pid, as its lock file names it.
    pub fn server_pid(&self) -> Pid {
        self.lock_file_pid()
            .expect("the server's lock file, naming its pid on the first line")
    }

    /// The pid the lock file names, if it can be read: a starting server replaces the file a
    /// killed one left, so for a moment it may be missing or not yet written.
    fn lock_file_pid(&self) -> Option<Pid> {
        let contents = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid = contents.lines().next()?.parse().ok()?;
        Some(Pid::from_raw(pid))
    }

    /// Waits, at most `bound`, until a server other than `killed` has started (it writes its
    /// lock file early in its start-up) and returns its pid.
    pub async fn server_other_than(&self, killed: Pid, bound: Duration) -> Pid {
        let started = Instant::now();
        loop {
            match self.lock_file_pid() {
                Some(pid) if pid != killed => return pid,
                _ => {}
            }
            assert!(
                started.elapsed() < bound,
                "no new server started within {bound:?} after {killed} was killed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops (SIGSTOP) the server and every process of its: a database that hangs, holding
    /// its connections open and answering nothing. They go on when the guard is dropped.
    pub fn pause(&self) -> Paused {
        let server = self.server_pid();
        // The server first, so that it starts no process that would be missed.
        signal::kill(server, Signal::SIGSTOP).expect("stop the server");
        let mut paused = Paused {
            processes: vec![server],
        };
        // Each backend leads a process group of its own, so the server's group is not enough:
        // its children are found by their parent pid.
        for child in children_of(server) {
            if signal::kill(child, Signal::SIGSTOP).is_ok() {
                paused.processes.push(child);
            }
        }
        paused
    }
}

/// Processes stopped by [`PrivateCluster::pause`]; dropping this lets them go on, so a test
/// that fails while they are stopped does not leave a hung server behind.
#[must_use = "the processes go on when this is dropped"]
pub struct Paused {
    processes: Vec<Pid>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        for &process in &self.processes {
            let _ = signal::kill(process, Signal::SIGCONT);
        }
    }
}

/// The pids of `parent`'s children, from `/proc/<pid>/stat`.
fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            // `pid (comm) state ppid ...`: the name may hold spaces and parentheses, so the
            // fields are counted from the last `)`.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}
