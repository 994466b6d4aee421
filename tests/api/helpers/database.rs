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
}

static TEST_SERVER: OnceLock<TestServer> = OnceLock::new();

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
                let admin = match std::env::var("TEST_DATABASE_URL") {
                    Ok(url) => url
                        .parse()
                        .expect("TEST_DATABASE_URL is a connection string"),
                    Err(_) => {
                        let cluster = runtime
                            .block_on(Cluster::start(&cluster_dir(), Durability::Throwaway))
                            .expect("the test cluster starts");
                        CLUSTER
                            .get_or_init(|| cluster)
                            .connection_config("postgres")
                    }
                };
                let template = format!("orders_template_{}", std::process::id());
                runtime.block_on(create_template(&admin, &template));
                sender.send(TestServer { admin, template }).unwrap();
            })
            .expect("spawn the test-postgres thread");
        receiver.recv().expect("the test database server starts")
    })
}

/// A folder of this process's own, under the system temp folder (which the unprivileged
/// user the cluster runs as can reach). Folders of earlier runs whose process is gone are
/// removed first.
fn cluster_dir() -> PathBuf {
    let root = std::env::temp_dir().join("orders-test-clusters");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    std::fs::create_dir_all(&root).unwrap();
    // Let the unprivileged server user reach its own folder inside.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    root.join(std::process::id().to_string())
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
fn run_to_completion(
    work: impl Future<Output = Result<(), tokio_postgres::Error>> + Send,
) -> Result<(), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| error.to_string())?
                    .block_on(work)
                    .map_err(|error| error.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("the thread running it panicked".to_owned()))
    })
}

async fn drop_database(
    admin: &tokio_postgres::Config,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
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
}

/// A fresh, migrated, empty database of the test's own.
pub async fn fresh_database() -> TestDatabase {
    let server = test_server();
    static DROP_TEMPLATE_AT_EXIT: Once = Once::new();
    DROP_TEMPLATE_AT_EXIT.call_once(drop_template_at_exit);
    create_database(&server.template).await
}

/// Arranges for the template to be dropped when the test process exits. The test harness has
/// no hook for the end of a run and statics are never dropped, so this asks the C library
/// (`atexit`), which runs the handler whether the run passed or failed. A process that is
/// killed runs no handler and leaves its template (`orders_template_<pid>`) behind.
///
/// Done on the private cluster too, though it goes away with the process: one way for both.
fn drop_template_at_exit() {
    unsafe extern "C" {
        fn atexit(handler: extern "C" fn()) -> std::ffi::c_int;
    }
    extern "C" fn drop_template() {
        let Some(server) = TEST_SERVER.get() else {
            return;
        };
        let (admin, template) = (server.admin.clone(), server.template.clone());
        let dropped = run_to_completion(async move { drop_database(&admin, &template).await });
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
