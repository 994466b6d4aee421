//! The binary as a user runs it: `orders` with no DATABASE_URL starts its own PostgreSQL,
//! serves the sample data, shuts everything down cleanly on SIGTERM, and starts again after
//! being killed outright.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use reqwest::StatusCode;

use crate::helpers::at;

#[test]
fn openapi_prints_the_committed_spec() {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    // Not assert_eq: on failure it would print both specs whole.
    assert!(
        output.stdout == include_str!("../../openapi.yaml").as_bytes(),
        "`orders openapi` prints something other than openapi.yaml: regenerate it"
    );
}

/// `orders serve` on a port of its own, killed when dropped so a failed test leaves nothing
/// running. Its log goes to a file, shown when the test fails.
struct Server {
    child: Child,
    client: orders_client::Client,
    log: PathBuf,
}

impl Server {
    async fn start(data_dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = data_dir.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_orders"))
            .env_remove("DATABASE_URL")
            .env("ORDERS_DATA_DIR", data_dir)
            .env("ORDERS_BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            client: orders_client::Client::new(&format!("http://127.0.0.1:{port}")),
            log,
        };
        server.wait_until_ready().await;
        server
    }

    async fn wait_until_ready(&mut self) {
        // A first start runs initdb, migrates and seeds: allow for a slow machine.
        let started = Instant::now();
        loop {
            let ready = self.client.health_ready().send().await;
            if ready.is_ok_and(|response| response.status() == StatusCode::OK) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not ready in time; log:\n{}",
                self.log_text()
            );
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "exited early; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many orders the service lists (all of them: fewer than a page here).
    async fn order_count(&self) -> usize {
        let page = self.client.order_list().send().await.unwrap();
        assert_eq!(page.next_page_token, None);
        page.orders.len()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "did not exit in time; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_first_start_interrupted_during_initdb_does_not_stop_the_next() {
    let data_dir = data_dir();
    // What an initdb killed half way leaves: its staging folder, part written.
    let staging = data_dir.join(".postgres.initdb");
    std::fs::create_dir_all(staging.join("global")).unwrap();
    std::fs::write(staging.join("PG_VERSION"), "15\n").unwrap();

    let server = Server::start(&data_dir).await;

    assert_eq!(server.order_count().await, 3);
    assert!(!staging.exists(), "the staging folder became the cluster");
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("orders-cli-test-{}", uuid::Uuid::new_v4().simple()))
}

/// The pid on the first line of PostgreSQL's lock file, while it runs.
fn postgres_pid(data_dir: &Path) -> Option<Pid> {
    let contents = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid")).ok()?;
    contents.lines().next()?.parse().ok().map(Pid::from_raw)
}

fn is_running(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}

#[tokio::test]
async fn serve_without_database_url_runs_a_private_cluster_and_stops_it_on_sigterm() {
    let data_dir = data_dir();
    let mut server = Server::start(&data_dir).await;
    let postgres = postgres_pid(&data_dir).expect("PostgreSQL runs");

    let order = server.client.order_view().id("223").send().await.unwrap();
    assert_eq!(
        order.datetime,
        at("2022-11-01T11:11:11.111Z"),
        "the sample data is loaded on first start"
    );

    server.signal(Signal::SIGTERM);
    let status = server.wait(Duration::from_secs(40));
    assert!(
        status.success(),
        "exits cleanly: {status}; log:\n{}",
        server.log_text()
    );
    assert!(!is_running(postgres), "PostgreSQL has stopped");
    assert!(
        postgres_pid(&data_dir).is_none(),
        "and stopped cleanly (it removes its lock file)"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A folder only root may enter, like a clone in root's home (mode 700). Removed when dropped,
/// with the cluster kept elsewhere for it.
struct ClosedFolder(PathBuf);

impl ClosedFolder {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let folder = std::env::temp_dir().join(format!(
            "orders-closed-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&folder).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self(folder)
    }

    /// Where the cluster's files went, if they went elsewhere: the target of the link that
    /// stands for the cluster's folder in the data folder.
    fn relocated_cluster(&self) -> Option<PathBuf> {
        std::fs::read_link(self.0.join("data/postgres")).ok()
    }
}

impl Drop for ClosedFolder {
    fn drop(&mut self) {
        if let Some(cluster) = self.relocated_cluster() {
            let _ = std::fs::remove_dir_all(&cluster);
            let _ = std::fs::remove_file(cluster.with_extension("source"));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn serve_as_root_from_a_folder_closed_to_the_server_user_keeps_the_cluster_where_it_can_reach()
 {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: only root runs PostgreSQL as another user");
        return;
    }
    let closed = ClosedFolder::new();
    let data_dir = closed.0.join("data");

    let mut server = Server::start(&data_dir).await;

    let ready = server.client.health_ready().send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let order = server.client.order_view().id("223").send().await.unwrap();
    assert_eq!(order.datetime, at("2022-11-01T11:11:11.111Z"));
    let cluster = closed
        .relocated_cluster()
        .expect("the data folder links to the cluster's files");
    assert!(!cluster.starts_with(&closed.0), "{}", cluster.display());
    let holder = std::fs::metadata(cluster.parent().unwrap()).unwrap();
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let server_user = nix::unistd::User::from_name("postgres")
            .unwrap()
            .or(nix::unistd::User::from_name("nobody").unwrap())
            .unwrap();
        assert_eq!(holder.uid(), server_user.uid.as_raw());
        assert_eq!(holder.permissions().mode() & 0o777, 0o700);
    }
    assert!(
        postgres_pid(&data_dir).is_some(),
        "PostgreSQL runs there, reached through the link"
    );
    server.signal(Signal::SIGTERM);
    let status = server.wait(Duration::from_secs(40));
    assert!(status.success(), "log:\n{}", server.log_text());

    let mut again = Server::start(&data_dir).await;

    assert_eq!(
        again.order_count().await,
        3,
        "the next start finds the same cluster, not seeded twice"
    );
    assert_eq!(closed.relocated_cluster(), Some(cluster));
    // Stopped cleanly before its files are removed.
    again.signal(Signal::SIGTERM);
    again.wait(Duration::from_secs(40));
}

#[tokio::test]
async fn serve_starts_again_after_it_and_its_postgres_were_killed_outright() {
    let data_dir = data_dir();
    let mut first = Server::start(&data_dir).await;
    let postgres = postgres_pid(&data_dir).expect("PostgreSQL runs");

    // As after a power cut: no one shuts down, and the lock file stays behind.
    kill(postgres, Signal::SIGKILL).unwrap();
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10));
    let started = Instant::now();
    while is_running(postgres) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "PostgreSQL did not die"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        postgres_pid(&data_dir).is_some(),
        "a stale lock file is left"
    );

    let second = Server::start(&data_dir).await;

    assert_eq!(
        second.order_count().await,
        3,
        "the data survived; it was not seeded twice"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn seed_with_database_url_uses_that_server_and_starts_none() {
    let config = crate::helpers::unmigrated_database().await;
    let data_dir = data_dir();

    for run in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_orders"))
            .arg("seed")
            .env("DATABASE_URL", crate::helpers::connection_string(&config))
            .env("ORDERS_DATA_DIR", &data_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    assert!(!data_dir.exists(), "no private cluster was created");
    let pool = orders::storage::connect_pool(config, 1);
    let client = pool.get().await.unwrap();
    let orders: Vec<i64> = client
        .query("SELECT id FROM orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        orders,
        [223, 224, 225],
        "migrated and seeded once, though seeded twice"
    );
}
