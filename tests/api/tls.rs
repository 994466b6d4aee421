//! TLS to an external PostgreSQL, as `sslmode` and `sslrootcert` in DATABASE_URL ask: against
//! a private cluster of this module's own that listens on TCP with a certificate made here
//! (a test CA's, for `localhost` only) and accepts TCP connections only over TLS.

use std::{
    net::SocketAddr,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

use orders::{
    config::{DatabaseSettings, DatabaseUrl, Settings},
    embedded_postgres::{Cluster, Durability, quote_identifier},
    startup::{Database, StartError},
    storage::migrations,
    telemetry::error_chain,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::StatusCode;

/// In every DATABASE_URL here; trust authentication ignores it, and no log may show it.
const PASSWORD: &str = "pw-that-must-never-be-logged";

/// The TLS server, and the files a client needs.
struct TlsServer {
    port: u16,
    /// Connection settings for the maintenance database, over the Unix socket.
    admin: tokio_postgres::Config,
    /// The CA that signed the server's certificate.
    root: PathBuf,
    /// Another CA, which signed nothing the server has.
    other_root: PathBuf,
}

fn tls_server() -> &'static TlsServer {
    // Never dropped: the cluster runs until the process exits, which stops it.
    static SERVER: OnceLock<(TlsServer, Cluster)> = OnceLock::new();
    let (server, _) = SERVER.get_or_init(|| {
        // Tests get here inside their own runtime, which cannot block on a future.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            sender.send(runtime.block_on(start_tls_server())).unwrap();
        });
        receiver.recv().expect("the TLS test server starts")
    });
    server
}

async fn start_tls_server() -> (TlsServer, Cluster) {
    // Named like the harness's run folders, so a later run removes it once this one is gone.
    let run_dir = std::env::temp_dir().join(format!(
        "orders-test-{}-tls-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir(&run_dir).unwrap();
    // The unprivileged server user must reach its folder inside.
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let cluster = Cluster::start_with_settings(
        &run_dir.join("cluster"),
        Durability::Throwaway,
        &[
            ("listen_addresses", "127.0.0.1"),
            ("port", &port.to_string()),
        ],
    )
    .await
    .expect("the TLS test cluster starts");
    let data_dir = cluster.socket_dir().to_owned();

    let (ca, ca_pem) = certificate_authority("orders test CA");
    let (_, other_ca_pem) = certificate_authority("another CA");
    let server_key = KeyPair::generate().unwrap();
    let server_certificate = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    // The server reads its key only if the file is its user's and closed to others.
    let owner = std::fs::metadata(&data_dir).unwrap();
    for (name, contents) in [
        ("server.crt", server_certificate.pem()),
        ("server.key", server_key.serialize_pem()),
    ] {
        let path = data_dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let root = run_dir.join("root.crt");
    std::fs::write(&root, ca_pem).unwrap();
    let other_root = run_dir.join("other-root.crt");
    std::fs::write(&other_root, other_ca_pem).unwrap();
    // TCP only with TLS: what a managed PostgreSQL that requires TLS does.
    std::fs::write(
        data_dir.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();

    let mut admin = cluster.connection_config("postgres");
    admin.port(port);
    let (client, connection) = admin.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // One statement at a time: ALTER SYSTEM cannot run in the transaction a batch makes.
    for statement in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    // The reload is asynchronous: wait until a new session sees TLS switched on.
    let what = format!(
        "ssl=on taking effect (the server log is {})",
        data_dir.join("server.log").display()
    );
    crate::helpers::eventually(&what, Duration::from_secs(20), async || {
        let (client, connection) = admin.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        ssl == "on"
    })
    .await;
    let server = TlsServer {
        port,
        admin,
        root,
        other_root,
    };
    (server, cluster)
}

/// A self-signed CA, and its certificate in PEM.
fn certificate_authority(name: &str) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = ca.pem();
    (ca, pem)
}

/// A port free now; PostgreSQL binds it a moment later.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A database of the test's own on the TLS server; its name.
async fn fresh_database() -> String {
    let server = tls_server();
    let name = format!("tls_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = server.admin.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {}", quote_identifier(&name)))
        .await
        .unwrap();
    name
}

/// DATABASE_URL for `database` on the TLS server, reached as `host`, with `tls` appended
/// (`sslmode=...&sslrootcert=...`).
fn url(host: &str, database: &str, tls: &str) -> String {
    let port = tls_server().port;
    format!("postgres://postgres:{PASSWORD}@{host}:{port}/{database}?{tls}")
}

fn root() -> String {
    tls_server().root.display().to_string()
}

/// The settings `orders` would read with `database_url`, everything else at its defaults.
fn settings(database_url: &str) -> Settings {
    Settings {
        database: DatabaseSettings::External(DatabaseUrl::new(database_url)),
        ..Settings::default()
    }
}

/// What a session on `database`'s pool says of itself: whether it is encrypted.
async fn session_is_encrypted(database: &Database) -> bool {
    let client = database.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Opens the database as `orders` does at start-up, and migrates it: the first statement.
async fn open_and_migrate(database_url: &str) -> Result<Database, StartError> {
    let database = Database::open(&settings(database_url)).await?;
    migrations::run(&database.pool).await?;
    Ok(database)
}

/// `orders` with DATABASE_URL set, its log in a file; killed when dropped.
struct Orders {
    child: Child,
    log: PathBuf,
}

impl Orders {
    fn spawn(database_url: &str, args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "orders-tls-test-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("ORDERS_BIND", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    /// Waits for the process to exit, within a bound that a slow machine meets.
    async fn exit(&mut self) -> ExitStatus {
        let what = format!("the service exiting; log:\n{}", self.log_text());
        crate::helpers::eventually_some(&what, Duration::from_secs(60), async || {
            self.child.try_wait().unwrap()
        })
        .await
    }

    /// The address from the `serving` log line, once it is written.
    async fn serving_address(&mut self) -> SocketAddr {
        let started = Instant::now();
        loop {
            let address = self
                .log_text()
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|event| event["message"] == "serving")
                .and_then(|event| event["address"].as_str()?.parse().ok());
            if let Some(address) = address {
                return address;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "exited early; log:\n{}",
                self.log_text()
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not serving in time; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Orders {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(self.log.with_extension("out"));
    }
}

/// Starts `orders serve` on `database_url`, expects it to fail at start-up, and returns the
/// error it logged.
async fn start_up_error(database_url: &str) -> String {
    let mut orders = Orders::spawn(database_url, &["serve"]);
    let status = orders.exit().await;
    let log = orders.log_text();
    assert!(!status.success(), "started; log:\n{log}");
    assert!(
        !log.contains(PASSWORD),
        "the log shows the password:\n{log}"
    );
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["level"] == "ERROR")
        .and_then(|event| event["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"))
}

#[tokio::test]
async fn verify_full_with_the_right_root_serves_requests_over_encrypted_sessions() {
    // Arrange: a key made by `orders keys`, itself over TLS.
    let database = fresh_database().await;
    let database_url = url(
        "localhost",
        &database,
        &format!("sslmode=verify-full&sslrootcert={}", root()),
    );
    let mut keys = Orders::spawn(
        &database_url,
        &[
            "keys",
            "create",
            "--name",
            "tls-test",
            "--scope",
            "orders:read",
        ],
    );
    assert!(keys.exit().await.success(), "log:\n{}", keys.log_text());
    let secret = keys.stdout_text().lines().last().unwrap().trim().to_owned();

    // Act
    let mut orders = Orders::spawn(&database_url, &["serve"]);
    let address = orders.serving_address().await;
    let response = crate::helpers::http_client_with_key(&secret)
        .get(format!("http://{address}/orders"))
        .send()
        .await
        .unwrap();

    // Assert: served from the database, and every session of the service's is encrypted.
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["orders"], serde_json::json!([]), "{body}");
    let (client, connection) = tls_server()
        .admin
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
            &[&database],
        )
        .await
        .unwrap();
    let (sessions, all_encrypted): (i64, bool) = (row.get(0), row.get(1));
    assert!(sessions >= 1, "the service holds a session");
    assert!(all_encrypted, "every session of the service's is encrypted");
    assert!(!orders.log_text().contains(PASSWORD));

    // And the same settings in-process, from the session's own view.
    let database = open_and_migrate(&database_url).await.unwrap();
    assert!(session_is_encrypted(&database).await);
    database.close().await;
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_that_does_not_name_the_host() {
    let database = fresh_database().await;
    // The certificate names localhost only.
    let error = start_up_error(&url(
        "127.0.0.1",
        &database,
        &format!("sslmode=verify-full&sslrootcert={}", root()),
    ))
    .await;

    assert!(
        error.contains("the database's certificate does not match host 127.0.0.1"),
        "{error}"
    );
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_not_signed_by_the_root_given() {
    let database = fresh_database().await;
    let other_root = tls_server().other_root.display().to_string();
    let error = start_up_error(&url(
        "localhost",
        &database,
        &format!("sslmode=verify-full&sslrootcert={other_root}"),
    ))
    .await;

    assert!(
        error.contains(&format!(
            "the database's certificate is not signed by a root in sslrootcert ({other_root})"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn require_without_a_root_encrypts_but_checks_no_certificate() {
    let database = fresh_database().await;
    // Neither the host name (127.0.0.1) nor the CA is one the client could check.
    let database = open_and_migrate(&url("127.0.0.1", &database, "sslmode=require"))
        .await
        .unwrap();

    assert!(session_is_encrypted(&database).await);
    database.close().await;
}

#[tokio::test]
async fn require_and_verify_ca_with_a_root_check_the_signature_but_not_the_host() {
    let database = fresh_database().await;
    for mode in ["require", "verify-ca"] {
        let right = url(
            "127.0.0.1",
            &database,
            &format!("sslmode={mode}&sslrootcert={}", root()),
        );
        let opened = open_and_migrate(&right).await.unwrap();
        assert!(session_is_encrypted(&opened).await, "{mode}");
        opened.close().await;

        let wrong = url(
            "127.0.0.1",
            &database,
            &format!(
                "sslmode={mode}&sslrootcert={}",
                tls_server().other_root.display()
            ),
        );
        let error = error_chain(&open_and_migrate(&wrong).await.err().unwrap());
        assert!(
            error.contains("is not signed by a root in sslrootcert"),
            "{mode}: {error}"
        );
    }
}

#[tokio::test]
async fn prefer_the_default_encrypts_when_the_server_offers_it() {
    let database = fresh_database().await;
    let opened = open_and_migrate(&url("127.0.0.1", &database, "application_name=orders"))
        .await
        .unwrap();

    assert!(session_is_encrypted(&opened).await);
    opened.close().await;
}

#[tokio::test]
async fn disable_against_a_server_that_requires_tls_is_refused_by_the_server() {
    let database = fresh_database().await;
    let error = start_up_error(&url("127.0.0.1", &database, "sslmode=disable")).await;

    assert!(error.contains("no pg_hba.conf entry"), "{error}");
    assert!(error.contains("no encryption"), "{error}");
}

#[tokio::test]
async fn unusable_tls_settings_stop_start_up_naming_the_cause() {
    let database = fresh_database().await;
    let missing = Path::new("/nonexistent/root.crt");
    for (tls, expected) in [
        (
            format!("sslmode=verify-full&sslrootcert={}", missing.display()),
            format!("the sslrootcert file {} cannot be read", missing.display()),
        ),
        (
            "sslmode=verify-full".to_owned(),
            "sslmode=verify-full checks the database's certificate, so it needs sslrootcert"
                .to_owned(),
        ),
        (
            "sslmode=verify-everything".to_owned(),
            "sslmode \"verify-everything\" is not one of".to_owned(),
        ),
    ] {
        let error = match open_and_migrate(&url("localhost", &database, &tls)).await {
            Ok(_) => panic!("{tls}: started"),
            Err(error) => error_chain(&error),
        };
        assert!(error.contains(&expected), "{tls}: {error}");
        assert!(!error.contains(PASSWORD), "{error}");
    }
}
