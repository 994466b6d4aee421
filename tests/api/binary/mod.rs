//! The binary as a user runs it (`orders` and its commands), each concern a module: start-up,
//! shutdown, limits, key management, trace export, what serving the documents costs, what
//! callers can put in the log, and what hostile callers cost. Here, the harness they share: a server
//! process of its own, and raw HTTP read off the wire.

mod documents;
mod hostile;
mod keys;
mod limits;
mod log;
mod otlp;
mod shutdown;
mod start;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use reqwest::StatusCode;
use serde_json::Value;

use orders::domain::Scope;

use crate::helpers::{TestDatabase, create_key, typed_client_with_key};

/// `orders serve` on a port of its own, killed when dropped so a failed test leaves nothing
/// running. Its log goes to a file, shown when the test fails.
struct Server {
    child: Child,
    address: SocketAddr,
    /// Sends the secret of the `local` key that the first start made.
    client: orders_client::Client,
    /// That secret, as read from the data folder's `api-key`.
    secret: String,
    log: PathBuf,
}

impl Server {
    /// With no DATABASE_URL: the private cluster in `data_dir`, and its `local` key.
    async fn start(data_dir: &Path) -> Self {
        let mut server = Self::spawn(data_dir, None, &[]).await;
        let key_file = data_dir.join("api-key");
        server.secret = std::fs::read_to_string(&key_file)
            .unwrap_or_else(|error| panic!("read {}: {error}", key_file.display()))
            .trim()
            .to_owned();
        server.client = typed_client_with_key(&server.base(), &server.secret);
        server
    }

    /// On the database `url`, where no key is made: [`Server::client`] sends none.
    async fn start_on_database(url: &str) -> Self {
        Self::start_on_database_with(url, &[]).await
    }

    /// [`Server::start_on_database`], with the environment variables `env` set too.
    async fn start_on_database_with(url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(&data_dir(), Some(url), env).await
    }

    async fn spawn(data_dir: &Path, database_url: Option<&str>, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(data_dir, database_url, env, |_| {}).await
    }

    /// Like [`Server::spawn`], with the command changed by `configure` first (more settings).
    async fn spawn_with(
        data_dir: &Path,
        database_url: Option<&str>,
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let log = data_dir.with_extension("log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_orders"));
        command.envs(env.iter().copied());
        match database_url {
            Some(url) => command.env("DATABASE_URL", url),
            None => command.env_remove("DATABASE_URL"),
        };
        configure(&mut command);
        let child = command
            .env("ORDERS_DATA_DIR", data_dir)
            // Port 0: the server binds a free port itself, so no other test can take it between
            // choosing and binding; its log says which (see `wait_until_ready`).
            .env("ORDERS_BIND", "127.0.0.1:0")
            // The default level, whatever the test run's: tests read the log lines.
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let unbound: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut server = Self {
            child,
            address: unbound,
            client: orders_client::Client::new("http://127.0.0.1:0"),
            secret: String::new(),
            log,
        };
        server.wait_until_ready().await;
        server
    }

    /// The address from the server's `serving` log line (JSON, since the log is a file), once
    /// it is written.
    fn bound_address(&self) -> Option<SocketAddr> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|event| event["message"] == "serving")
            .and_then(|event| event["address"].as_str()?.parse().ok())
    }

    fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The status of `GET /orders` with the key `secret`.
    async fn get_orders(&self, secret: &str) -> StatusCode {
        crate::helpers::http_client_with_key(secret)
            .get(format!("{}/orders", self.base()))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn wait_until_ready(&mut self) {
        // A first start runs initdb, migrates and seeds: allow for a slow machine.
        let started = Instant::now();
        loop {
            if self.address.port() == 0
                && let Some(address) = self.bound_address()
            {
                self.address = address;
                self.client = orders_client::Client::new(&self.base());
            }
            if self.address.port() != 0 {
                let ready = self.client.health_ready().send().await;
                if ready.is_ok_and(|response| response.status() == StatusCode::OK) {
                    return;
                }
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

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
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

/// An HTTP/1.1 response as read off the wire, whole, up to the end of the connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("a whole response head: {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.strip_prefix("HTTP/1.1 "))
            .and_then(|line| line.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("an HTTP/1.1 status line: {text:?}"));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("a {name} header in {self:?}"))
    }
}

/// Reads one response head (up to its blank line), for an interim response such as 100.
fn read_head(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .unwrap_or_else(|error| panic!("a response head, after {head:?}: {error}"));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads what the server sends until it closes the connection.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the server answers and closes the connection in time");
    bytes
}

/// What a GET on a new connection to `address` gets, if it gets anything: `None` when the
/// connection is refused, reset, closed or left unanswered.
fn get_on_a_new_connection(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads one response off `stream`, a keep-alive one: its head, then `content-length` bytes.
fn read_one_response(stream: &mut TcpStream) -> RawResponse {
    let head = read_head(stream);
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("a content-length in {head:?}"));
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    RawResponse::parse(&[head.as_bytes(), &body].concat())
}

/// What connecting to `address` comes to: refused is `Err(ConnectionRefused)`.
fn connect(address: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&address, Duration::from_secs(2))
}

/// A database of the test's own, and a pool on it with no serving limits.
struct OwnDatabase {
    pool: deadpool_postgres::Pool,
    // Dropped after the pool is.
    _database: TestDatabase,
}

impl OwnDatabase {
    /// Waits until a session on the database waits for a lock; fails after 10 s.
    async fn wait_for_a_lock_waiter(&self) {
        let client = self.pool.get().await.unwrap();
        crate::helpers::eventually(
            "a request waits for the lock",
            Duration::from_secs(10),
            async || {
                let waiting: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                waiting > 0
            },
        )
        .await;
    }
}

/// A server on a fresh database of the test's own, so that no PostgreSQL stops with it and
/// its exit times are its own; `configure` adds settings. Returns it with a key's secret.
async fn server_on_a_database_of_its_own(
    configure: impl FnOnce(&mut Command),
) -> (Server, OwnDatabase) {
    let database = crate::helpers::fresh_database().await;
    let url = crate::helpers::connection_string(database.config());
    let pool = orders::storage::connect_pool(database.config().clone(), 2);
    let secret = create_key(&pool, "operator", &Scope::ALL).await;
    let mut server = Server::spawn_with(&data_dir(), Some(&url), &[], configure).await;
    server.secret = secret;
    server.client = typed_client_with_key(&server.base(), &server.secret);
    (
        server,
        OwnDatabase {
            pool,
            _database: database,
        },
    )
}

/// The `message` and fields of each JSON log line of `server` whose message starts with `start`.
fn log_events(server: &Server, start: &str) -> Vec<Value> {
    server
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| {
            event["message"]
                .as_str()
                .is_some_and(|message| message.starts_with(start))
        })
        .collect()
}
