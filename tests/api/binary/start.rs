//! Starting the binary as a user does: with no DATABASE_URL it runs a private PostgreSQL,
//! private to it (a password on its socket, a user of its own, none of the service's
//! environment), survives a first start cut short and being killed outright, keeps its
//! cluster where the server user can reach it, and gives a `local` key; with one, it uses that
//! server.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};
use reqwest::StatusCode;

use crate::helpers::at;

use super::*;

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
        let server_user = nix::unistd::User::from_name(SERVER_USER).unwrap().unwrap();
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

/// The user the private cluster runs as when the service is started as root, as operators
/// meet it (`ps`, `ls -l`).
const SERVER_USER: &str = "orders-postgres";

/// The file in the cluster's folder that holds its superuser's password.
const PASSWORD_FILE: &str = "orders-superuser-password";

/// The uids (real, effective, saved, filesystem) of the process `pid`.
fn uids_of(pid: Pid) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|uid| uid.parse().unwrap())
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_private_cluster_gets_none_of_the_environment_the_service_was_started_with() {
    const SECRET: &str = "a-secret-of-the-service-s-own";
    let data_dir = data_dir();
    // Besides the marker, the service has all of this test process's environment (PATH, HOME, ...).
    let server = Server::spawn(&data_dir, None, &[("ORDERS_TEST_SECRET", SECRET)]).await;
    let postgres = postgres_pid(&data_dir).expect("PostgreSQL runs");

    let environ = std::fs::read(format!("/proc/{postgres}/environ")).unwrap();

    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
    let environ = String::from_utf8_lossy(&environ);
    let names: Vec<&str> = environ
        .split('\0')
        .filter(|variable| !variable.is_empty())
        .map(|variable| variable.split_once('=').map_or(variable, |(name, _)| name))
        .collect();
    // Names only: the values may be secrets of whoever runs the tests.
    assert!(
        !environ.contains(SECRET),
        "the marker is in the server's environment, among {names:?}"
    );
    assert!(
        names.iter().all(|name| ["LC_ALL", "TZ"].contains(name)),
        "the server's environment holds more than LC_ALL and TZ: {names:?}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_private_cluster_s_socket_refuses_connections_without_the_password_kept_beside_it() {
    use std::os::unix::fs::MetadataExt;
    let data_dir = data_dir();
    let server = Server::start(&data_dir).await;
    let cluster = data_dir.join("postgres");
    let postgres = postgres_pid(&data_dir).expect("PostgreSQL runs");
    let mut bare = tokio_postgres::Config::new();
    bare.host_path(&cluster).user("postgres").dbname("orders");

    let without = bare.connect(tokio_postgres::NoTls).await.map(drop);
    let file = std::fs::metadata(cluster.join(PASSWORD_FILE));
    let password = std::fs::read_to_string(cluster.join(PASSWORD_FILE)).unwrap_or_default();
    let mut with = bare.clone();
    with.password(password.trim());
    let orders = async {
        let (client, connection) = with.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client.query_one("SELECT count(*) FROM orders", &[]).await?;
        Ok::<i64, tokio_postgres::Error>(row.get(0))
    }
    .await;
    let server_uids = uids_of(postgres);

    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
    assert!(without.is_err(), "connected to the socket with no password");
    assert_eq!(orders.unwrap(), 3, "the password in the file lets one in");
    let file = file.unwrap();
    assert_eq!(file.mode() & 0o777, 0o600, "only its owner can read it");
    let expected = if nix::unistd::Uid::effective().is_root() {
        nix::unistd::User::from_name(SERVER_USER)
            .unwrap()
            .expect("the server user exists")
            .uid
            .as_raw()
    } else {
        nix::unistd::Uid::effective().as_raw()
    };
    assert_eq!(
        server_uids, [expected; 4],
        "PostgreSQL runs as {SERVER_USER}"
    );
    assert_eq!(file.uid(), expected, "the file is the server user's");
    let nobody = nix::unistd::User::from_name("nobody").unwrap();
    assert_ne!(nobody.map(|nobody| nobody.uid.as_raw()), Some(expected));
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
    let database = crate::helpers::unmigrated_database().await;
    let data_dir = data_dir();

    for run in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_orders"))
            .arg("seed")
            .env(
                "DATABASE_URL",
                crate::helpers::connection_string(database.config()),
            )
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
    let pool = orders::storage::connect_pool(database.config().clone(), 1);
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

#[tokio::test]
async fn the_private_cluster_s_local_key_holds_every_scope_survives_restarts_and_is_reissued_when_lost()
 {
    use std::os::unix::fs::PermissionsExt;
    let data_dir = data_dir();
    let key_file = data_dir.join("api-key");
    let mut first = Server::start(&data_dir).await;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner can read it");
    let created = first
        .client
        .service_create()
        .body(crate::helpers::service_input("Calibration"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "services:write");
    let order = first
        .client
        .order_create()
        .body(crate::helpers::order_input(
            "2031-01-01T10:00:00Z",
            5.0,
            &[created.id.as_str()],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), StatusCode::CREATED, "orders:write");
    assert_eq!(order.created_by, "local");
    assert_eq!(first.order_count().await, 4, "orders:read");
    let original = first.secret.clone();
    first.signal(Signal::SIGTERM);
    first.wait(Duration::from_secs(40));

    let mut second = Server::start(&data_dir).await;
    assert_eq!(second.secret, original, "a restart reuses the secret");
    assert_eq!(second.order_count().await, 4);
    second.signal(Signal::SIGTERM);
    second.wait(Duration::from_secs(40));

    std::fs::remove_file(&key_file).unwrap();
    let third = Server::start(&data_dir).await;
    assert_ne!(third.secret, original, "a lost file means a new secret");
    assert!(third.secret.starts_with("ord_"));
    assert_eq!(third.order_count().await, 4, "the new secret works");
    let old = crate::helpers::http_client_with_key(&original)
        .get(format!("http://{}/orders", third.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "the old secret works no more"
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(third);
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
