//! The binary as a user runs it: `orders` with no DATABASE_URL starts its own PostgreSQL,
//! serves the sample data, on SIGTERM drains (readiness 503, new connections refused, idle ones
//! closed, requests in flight finished) and shuts everything down cleanly, survives running out
//! of file descriptors, and starts again after being killed outright.

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
use serde_json::{Value, json};

use orders::domain::Scope;

use crate::helpers::{TestDatabase, at, create_key, typed_client_with_key};

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
        "openapi.yaml is out of date: run `cargo run -q -- openapi > openapi.yaml` and review the diff"
    );
}

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

/// How long until the server closes `stream` (end of file or reset); fails after `limit`.
fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {limit:?}")
            }
            Err(_) => return started.elapsed(),
        }
    }
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
        let started = Instant::now();
        let client = self.pool.get().await.unwrap();
        loop {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no request waits for the lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_and_half_sent_connections_at_once_refuses_new_ones_and_exits_once_the_request_in_flight_is_answered()
 {
    // Arrange: waits for locks longer than the test holds one, a drain bound far longer.
    let (mut server, database) = server_on_a_database_of_its_own(|command| {
        command
            .env("ORDERS_DB_LOCK_TIMEOUT", "60s")
            .env("ORDERS_DB_STATEMENT_TIMEOUT", "60s")
            .env("ORDERS_SHUTDOWN_TIMEOUT", "30s");
    })
    .await;
    let service = crate::helpers::http_client_with_key(&server.secret)
        .post(format!("{}/services", server.base()))
        .json(&json!({ "name": "Inspection" }))
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), StatusCode::CREATED);
    let service_id = service.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut locker = database.pool.get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // In flight: a create, sent whole, waiting for the lock.
    let body = json!({
        "datetime": "2023-01-01T00:00:00Z",
        "totalfee": 5,
        "services": [{ "id": service_id }],
    })
    .to_string();
    let mut in_flight = TcpStream::connect(server.address).unwrap();
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\ncontent-length: {}\r\n\r\n{body}",
        server.address,
        server.secret,
        body.len()
    );
    in_flight.write_all(request.as_bytes()).unwrap();
    database.wait_for_a_lock_waiter().await;
    // Idle: a keep-alive connection after one answer.
    let mut idle = TcpStream::connect(server.address).unwrap();
    write!(
        idle,
        "GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n",
        server.address
    )
    .unwrap();
    assert_eq!(read_one_response(&mut idle).status, 200);
    // Half sent: a request head cut short.
    let mut half_sent = TcpStream::connect(server.address).unwrap();
    write!(
        half_sent,
        "GET /healthz HTTP/1.1\r\nhost: {}\r\n",
        server.address
    )
    .unwrap();
    // Accepted and read by now, so it is closed as a connection, not refused as a newcomer.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let idle_closed = time_until_closed(&mut idle, Duration::from_secs(10));
    let half_sent_closed = time_until_closed(&mut half_sent, Duration::from_secs(10));
    let newcomer = connect(server.address);
    // The request stays in flight for a while after the signal: the server must wait for it.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(signalled.elapsed())).await;
    let running_with_a_request_in_flight = server.is_running();
    lock.rollback().await.unwrap();
    let released = Instant::now();
    let response = RawResponse::parse(&read_until_closed(&mut in_flight));
    let exit = server.wait(Duration::from_secs(20));
    let exited_after_release = released.elapsed();

    // Assert
    assert!(
        idle_closed < Duration::from_secs(2),
        "the idle connection was closed {idle_closed:?} after SIGTERM"
    );
    assert!(
        half_sent_closed < Duration::from_secs(2),
        "the half-sent request's connection was closed {:?} after SIGTERM",
        idle_closed + half_sent_closed
    );
    assert_eq!(
        newcomer.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a connection made after SIGTERM is refused: {newcomer:?}"
    );
    assert!(
        running_with_a_request_in_flight,
        "still running 1 s after SIGTERM, with a request in flight; log:\n{}",
        server.log_text()
    );
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.header("connection"), "close");
    assert_eq!(
        response.header("content-length"),
        response.body.len().to_string(),
        "the whole body arrived"
    );
    let order: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(order["datetime"], "2023-01-01T00:00:00.000Z");
    assert_eq!(order["services"][0]["id"], json!(service_id));
    // Far within the 30 s drain bound: it stopped because the request was done.
    assert!(
        exited_after_release < Duration::from_secs(3),
        "exited {exited_after_release:?} after the request could finish; log:\n{}",
        server.log_text()
    );
    assert!(exit.success(), "{exit}; log:\n{}", server.log_text());
    assert!(
        log_events(&server, "shutting down: requests still in progress").is_empty(),
        "nothing was cut off; log:\n{}",
        server.log_text()
    );
    let stored: i64 = database
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "the order answered with 201 was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_shutdown_delay_readyz_answers_503_shutting_down_and_the_rest_is_served_then_new_connections_are_refused()
 {
    // Arrange
    let delay = Duration::from_secs(3);
    let (mut server, _database) = server_on_a_database_of_its_own(|command| {
        command.env("ORDERS_SHUTDOWN_DELAY", "3s");
    })
    .await;

    // Act
    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let not_ready = loop {
        let ready = get_on_a_new_connection(server.address, "/readyz").expect("an answer");
        if !ready.starts_with("HTTP/1.1 200 ") || signalled.elapsed() > Duration::from_secs(2) {
            break RawResponse::parse(ready.as_bytes());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let turned_after = signalled.elapsed();
    let healthz = get_on_a_new_connection(server.address, "/healthz")
        .map(|text| RawResponse::parse(text.as_bytes()));
    let refused_after = loop {
        match connect(server.address) {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                break signalled.elapsed();
            }
            _ => {}
        }
        assert!(
            signalled.elapsed() < delay + Duration::from_secs(5),
            "still accepting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exit = server.wait(Duration::from_secs(10));

    // Assert
    assert!(turned_after < Duration::from_secs(1), "{turned_after:?}");
    assert_eq!(not_ready.status, 503, "{not_ready:?}");
    assert_eq!(not_ready.header("content-type"), "application/problem+json");
    assert_eq!(not_ready.header("retry-after"), "5");
    let problem: Value = serde_json::from_str(&not_ready.body).unwrap();
    assert_eq!(problem["code"], "SHUTTING_DOWN", "{problem}");
    assert_eq!(problem["status"], 503);
    assert_eq!(
        healthz.map(|response| response.status),
        Some(200),
        "served during the delay"
    );
    assert!(
        refused_after >= delay - Duration::from_millis(100),
        "the listener closed {refused_after:?} after SIGTERM, before the {delay:?} delay"
    );
    assert!(exit.success(), "{exit}; log:\n{}", server.log_text());
}

/// CPU time (user and system) the process `pid` has used so far, from `/proc/<pid>/stat`.
fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_file_limit_the_accept_loop_backs_off_logs_and_recovers_without_spinning() {
    // Arrange: a server whose open-file limit (soft and hard) is 64, with a cap set far past it,
    // so connections alone run it out of descriptors.
    const LIMIT: u64 = 64;
    let (server, _database) = server_on_a_database_of_its_own(|command| {
        command
            .env("ORDERS_MAX_CONNECTIONS", "1000")
            .env("ORDERS_DB_POOL_SIZE", "2");
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe, and the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    LIMIT,
                    LIMIT,
                )
                .map_err(std::io::Error::from)
            });
        }
    })
    .await;
    let pid = server.child.id();

    // Act: more connections than it has descriptors, held.
    let held: Vec<TcpStream> = (0..2 * LIMIT)
        .map(|_| TcpStream::connect(server.address).unwrap())
        .collect();
    // Time for it to accept what it can and meet the limit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_time_of(pid);
    let hold = Duration::from_secs(3);
    tokio::time::sleep(hold).await;
    let cpu = cpu_time_of(pid) - cpu_before;
    let errors = log_events(&server, "could not accept a connection");
    drop(held);
    let recovered = Instant::now();
    let healthz = loop {
        if let Some(answer) = get_on_a_new_connection(server.address, "/healthz") {
            break RawResponse::parse(answer.as_bytes());
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "not answering after the connections were closed; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Assert: a spinning loop would take a whole core for the whole hold.
    assert!(
        cpu < Duration::from_millis(500),
        "{cpu:?} of CPU in {hold:?}"
    );
    assert!(
        !errors.is_empty()
            && errors.iter().all(|event| {
                event["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("os error 24"))
            }),
        "the accept errors are logged, as too many open files: {errors:?}; log:\n{}",
        server.log_text()
    );
    // One line per 10 s at most, however many errors: the first, and perhaps one more.
    assert!(errors.len() <= 2, "{errors:?}");
    assert_eq!(healthz.status, 200, "{healthz:?}");
}

#[tokio::test]
async fn at_start_the_soft_open_file_limit_is_raised_to_the_hard_one_and_the_connection_cap_follows_it()
 {
    // Arrange: a soft limit far below the hard one, as many systems start services with.
    const SOFT: u64 = 256;
    const HARD: u64 = 2048;
    let (server, _database) = server_on_a_database_of_its_own(|command| {
        command.env("ORDERS_DB_POOL_SIZE", "4");
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe, and the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    SOFT,
                    HARD,
                )
                .map_err(std::io::Error::from)
            });
        }
    })
    .await;

    // Act
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let serving = log_events(&server, "serving");

    // Assert: the limit in force is the hard one, and the cap was derived from it.
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3..5],
        [HARD.to_string(), HARD.to_string()],
        "{limits}"
    );
    assert_eq!(
        serving[0]["max_connections"],
        json!(orders::server::open_files::default_connection_cap(
            Some(HARD),
            4
        )),
        "{serving:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_handler_is_logged_with_its_message_and_the_connection_serves_on() {
    // Arrange: an order whose time no answer can hold (year 10000), written around the API.
    let (mut server, database) = server_on_a_database_of_its_own(|_| {}).await;
    database
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO services (id, name, created_by, updated_by)
                 OVERRIDING SYSTEM VALUE VALUES (77, 'Inspection', 'bulk', 'bulk');
             INSERT INTO orders (id, scheduled_at, total_fee, created_by, updated_by)
                 OVERRIDING SYSTEM VALUE VALUES (5000, '10000-01-01T00:00:00Z', 1, 'bulk', 'bulk');
             INSERT INTO order_services (order_id, service_id, position) VALUES (5000, 77, 1);",
        )
        .await
        .unwrap();
    let mut connection = TcpStream::connect(server.address).unwrap();
    let request = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\nx-request-id: panic-log-test\r\n\r\n",
            server.address, server.secret
        )
    };

    // Act: the panicking request, then another on the same connection.
    connection
        .write_all(request("/orders/5000").as_bytes())
        .unwrap();
    let panicked = read_one_response(&mut connection);
    connection
        .write_all(request("/services/77").as_bytes())
        .unwrap();
    let after = read_one_response(&mut connection);

    // Assert
    assert_eq!(panicked.status, 500, "{panicked:?}");
    let problem: Value = serde_json::from_str(&panicked.body).unwrap();
    assert_eq!(problem["code"], "INTERNAL");
    assert_eq!(problem["request_id"], "panic-log-test");
    assert_eq!(
        after.status, 200,
        "the same connection serves on: {after:?}"
    );
    let logged = log_events(&server, "a handler panicked");
    assert!(
        logged.len() == 1
            && logged[0]["panic"]
                .as_str()
                .is_some_and(|message| message.contains("stored timestamps are within range"))
            && logged[0]["span"]["request_id"] == "panic-log-test",
        "the panic is logged once, with its message and the request's id: {logged:?}; log:\n{}",
        server.log_text()
    );
    assert!(server.is_running(), "the process runs on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_shutdown_timeout_a_request_still_in_progress_is_cut_off_and_the_process_exits() {
    // Arrange: a read that waits for a lock far longer than the 2 s drain bound.
    let (mut server, database) = server_on_a_database_of_its_own(|command| {
        command
            .env("ORDERS_DB_LOCK_TIMEOUT", "60s")
            .env("ORDERS_DB_STATEMENT_TIMEOUT", "60s")
            .env("ORDERS_SHUTDOWN_TIMEOUT", "2s");
    })
    .await;
    let mut locker = database.pool.get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut in_flight = TcpStream::connect(server.address).unwrap();
    write!(
        in_flight,
        "GET /orders HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
        server.address, server.secret,
    )
    .unwrap();
    database.wait_for_a_lock_waiter().await;

    // Act
    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let exit = server.wait(Duration::from_secs(10));
    let exited_after = signalled.elapsed();
    let answer = read_until_closed(&mut in_flight);
    lock.rollback().await.unwrap();

    // Assert: it waited for the bound, not for the request, then closed the connection.
    assert!(
        exited_after >= Duration::from_secs(2) && exited_after < Duration::from_secs(5),
        "exited {exited_after:?} after SIGTERM; log:\n{}",
        server.log_text()
    );
    assert!(exit.success(), "{exit}; log:\n{}", server.log_text());
    assert!(
        answer.is_empty(),
        "the cut-off request got no answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        log_events(&server, "shutting down: requests still in progress").len(),
        1,
        "the cut-off is logged; log:\n{}",
        server.log_text()
    );
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

/// `orders keys ...` against the database `url`: its exit status, stdout and stderr.
fn keys_command(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", url)
        .env("ORDERS_DATA_DIR", data_dir())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The row of `keys list` for the key `name`, as its cells (`-` for a time not yet set).
fn listed(url: &str, name: &str) -> Option<Vec<String>> {
    let (status, stdout, stderr) = keys_command(url, &["list"]);
    assert_eq!(status, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .collect();
    let header: Vec<&str> = header.iter().map(|cell| cell.trim()).collect();
    assert_eq!(
        header,
        ["NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED", "RATE"],
        "{stdout}"
    );
    lines
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells[0] == name)
}

/// A time as `keys list` shows it, to the minute.
fn listed_minute(cell: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::NaiveDateTime::parse_from_str(cell, "%Y-%m-%d %H:%MZ")
        .unwrap_or_else(|error| panic!("{cell:?} is a time to the minute: {error}"))
        .and_utc()
}

fn this_minute() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    chrono::Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap()
}

#[tokio::test]
async fn keys_create_list_and_revoke_manage_the_keys_a_server_on_that_database_accepts() {
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());
    let created_minute = this_minute();

    let (status, stdout, stderr) = keys_command(
        &url,
        &[
            "create",
            "--name",
            "ci-bot",
            "--scope",
            "orders:read",
            "--scope",
            "orders:write",
        ],
    );
    assert_eq!(status, Some(0), "{stderr}");
    let secret = stdout.lines().last().unwrap().to_owned();
    assert!(secret.starts_with("ord_"), "{stdout}");
    assert!(
        !secret.contains(' '),
        "the secret alone on the last line: {stdout:?}"
    );
    assert!(
        !stderr.contains(&secret),
        "the secret is not logged: {stderr}"
    );
    let row = listed(&url, "ci-bot").expect("ci-bot is listed");
    assert_eq!(row[1], "orders:read,orders:write");
    assert!(listed_minute(&row[2]) >= created_minute && listed_minute(&row[2]) <= this_minute());
    assert_eq!(
        (row[3].as_str(), row[4].as_str()),
        ("-", "-"),
        "never used, not revoked"
    );
    assert_eq!(
        listed(&url, "local"),
        None,
        "with DATABASE_URL no local key is made"
    );

    let server = Server::start_on_database(&url).await;
    let used_minute = this_minute();
    assert_eq!(server.get_orders(&secret).await, StatusCode::OK);
    let write_services = crate::helpers::http_client_with_key(&secret)
        .post(format!("{}/services", server.base()))
        .json(&json!({ "name": "Calibration" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        write_services.status(),
        StatusCode::FORBIDDEN,
        "not its scope"
    );

    // The refresher writes uses down every couple of seconds.
    let started = Instant::now();
    let row = loop {
        let row = listed(&url, "ci-bot").unwrap();
        if row[3] != "-" {
            break row;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the use was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let last_used = listed_minute(&row[3]);
    assert!(
        last_used >= used_minute && last_used <= this_minute(),
        "last used {last_used}, used at {used_minute}"
    );
    assert_eq!(row[4], "-");
    let (_, list_out, list_err) = keys_command(&url, &["list"]);
    assert!(
        !list_out.contains(&secret) && !list_err.contains(&secret),
        "list shows no secret"
    );

    let (status, stdout, stderr) = keys_command(&url, &["revoke", "ci-bot"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains("ci-bot"), "{stdout}");
    let started = Instant::now();
    while server.get_orders(&secret).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still accepted after revoking"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = listed(&url, "ci-bot").expect("a revoked key stays listed");
    assert!(listed_minute(&row[4]) <= this_minute(), "{row:?}");

    let log = server.log_text();
    assert!(!log.contains(&secret), "the secret is never logged:\n{log}");
    let named = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|line| {
            line["message"] == "request served"
                && line["status"] == 200
                && (line["key"] == "ci-bot" || line["span"]["key"] == "ci-bot")
        });
    assert!(named, "the request log names the key:\n{log}");
}

#[tokio::test]
async fn keys_create_with_a_rate_lists_it_and_a_server_holds_the_key_to_it() {
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());

    let (status, stdout, stderr) = keys_command(
        &url,
        &[
            "create",
            "--name",
            "metered",
            "--scope",
            "orders:read",
            "--rate",
            "1",
            "--burst",
            "2",
        ],
    );
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.contains("limited to 1 request a second, in bursts of up to 2"),
        "{stdout}"
    );
    let secret = stdout.lines().last().unwrap().to_owned();
    let (status, _, stderr) = keys_command(
        &url,
        &["create", "--name", "free", "--scope", "orders:read"],
    );
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(listed(&url, "metered").unwrap()[5], "1/s,burst=2");
    assert_eq!(
        listed(&url, "free").unwrap()[5],
        "-",
        "no limit of its own: the instance's applies"
    );
    for (args, complaint) in [
        (&["--rate", "0"][..], "whole number"),
        (&["--rate", "many"][..], "whole number"),
        (&["--burst", "3"][..], "--rate"),
    ] {
        let mut create = vec!["create", "--name", "refused", "--scope", "orders:read"];
        create.extend_from_slice(args);
        let (status, _, stderr) = keys_command(&url, &create);
        assert_eq!(status, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
    assert_eq!(listed(&url, "refused"), None, "nothing was created");

    let server = Server::start_on_database(&url).await;
    let started = Instant::now();
    let mut served = 0;
    let refused = loop {
        let status = server.get_orders(&secret).await;
        if status != StatusCode::OK {
            break status;
        }
        served += 1;
        assert!(served <= 10, "the key's limit was not applied");
    };
    assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        (2..=2 + started.elapsed().as_secs() + 1).contains(&served),
        "served {served} of a burst of 2"
    );
}

#[tokio::test]
async fn keys_refuses_bad_names_scopes_and_unknown_or_taken_names_with_status_2() {
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());
    let (status, _, stderr) = keys_command(
        &url,
        &["create", "--name", "taken", "--scope", "orders:read"],
    );
    assert_eq!(status, Some(0), "{stderr}");

    for (args, says) in [
        (
            &["create", "--name", "Bad Name", "--scope", "orders:read"][..],
            "Bad Name",
        ),
        (
            &["create", "--name", "ok", "--scope", "orders:delete"][..],
            "orders:delete",
        ),
        (&["create", "--name", "ok"][..], "--scope"),
        (
            &["create", "--name", "taken", "--scope", "orders:write"][..],
            "exists already",
        ),
        (&["revoke", "nobody"][..], "no key is named \"nobody\""),
    ] {
        let (status, stdout, stderr) = keys_command(&url, args);
        assert_eq!(status, Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(says),
            "{args:?}: stderr says {says:?}: {stderr}"
        );
        assert!(
            !stdout.contains("ord_"),
            "{args:?}: no secret printed: {stdout}"
        );
    }
    let (_, stdout, _) = keys_command(&url, &["list"]);
    let names: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(names, ["taken"], "nothing was created or changed");
    let row = listed(&url, "taken").unwrap();
    assert_eq!((row[1].as_str(), row[4].as_str()), ("orders:read", "-"));
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

/// Each request's line (`POST /v1/traces HTTP/1.1`) and body, in the order they came.
type Received = std::sync::Mutex<Vec<(String, Vec<u8>)>>;

/// An OTLP/HTTP collector that answers every export with 200 and keeps what was posted.
struct FakeCollector {
    address: SocketAddr,
    received: std::sync::Arc<Received>,
}

impl FakeCollector {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let received = std::sync::Arc::default();
        let kept = std::sync::Arc::clone(&received);
        // Ends with the test process; it holds nothing but its socket.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = std::sync::Arc::clone(&kept);
                std::thread::spawn(move || Self::serve(stream, &kept));
            }
        });
        Self { address, received }
    }

    /// Reads requests from one connection (the exporter keeps it alive) until it closes.
    fn serve(stream: TcpStream, kept: &Received) {
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut request_line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            kept.lock()
                .unwrap()
                .push((request_line.trim().to_owned(), body));
            writer
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                )
                .unwrap();
        }
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    let collector = FakeCollector::start();
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());
    let endpoint = format!("http://{}", collector.address);
    let server = Server::start_on_database_with(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // Sent in batches every 100 ms, instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;

    let live = server.client.health_live().send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    // The exporter's protobuf body holds its strings as they are: the service's name, and the
    // name of the request span.
    let contains =
        |body: &[u8], text: &str| body.windows(text.len()).any(|part| part == text.as_bytes());
    let started = Instant::now();
    loop {
        let exported = collector.received.lock().unwrap().clone();
        let request_spans = exported.iter().find(|(_, body)| {
            contains(body, "orders") && contains(body, "request") && contains(body, "/healthz")
        });
        if let Some((line, _)) = request_spans {
            assert!(line.starts_with("POST /v1/traces "), "{line}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no span of the request exported in 10 s: {:?}; log:\n{}",
            exported
                .iter()
                .map(|(line, body)| (line, body.len()))
                .collect::<Vec<_>>(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
