//! The test harness: a real PostgreSQL, a fresh database per test, the app on a free port, and
//! two ways to talk to it: the generated `orders-client` for everything a typed client can
//! express, and raw HTTP for what it must not be able to send.
//!
//! PostgreSQL is a private cluster started once per test process with the same code the
//! binary uses (or the server in `TEST_DATABASE_URL`). A template database is migrated once;
//! each test gets its own copy (`CREATE DATABASE ... TEMPLATE`), so tests run in parallel and
//! never see each other's rows.

use std::{
    path::PathBuf,
    sync::{OnceLock, mpsc},
    time::Duration,
};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use orders::{
    embedded_postgres::{Cluster, Durability, quote_identifier},
    startup::Application,
    storage,
};
use orders_client::{Error, ResponseValue, types};
use reqwest::{Response, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

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

/// A fresh, migrated, empty database of the test's own.
async fn fresh_database() -> tokio_postgres::Config {
    create_database(&test_server().template).await
}

/// A database of the test's own with nothing in it, not even the schema.
pub async fn unmigrated_database() -> tokio_postgres::Config {
    create_database("template0").await
}

async fn create_database(template: &str) -> tokio_postgres::Config {
    let server = test_server();
    let name = format!("orders_test_{}", uuid::Uuid::new_v4().simple());
    let client = connect(&server.admin).await;
    let create = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        quote_identifier(&name),
        quote_identifier(template)
    );
    // The template's last connection may take a moment to go away after migrating it.
    let mut attempts = 0;
    while let Err(error) = client.batch_execute(&create).await {
        attempts += 1;
        assert!(attempts < 50, "create a test database: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut config = server.admin.clone();
    config.dbname(&name);
    config
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

/// The application under test, serving on a free port.
pub struct TestApp {
    pub address: String,
    /// Raw HTTP, for requests the typed client cannot or must not send.
    pub http: reqwest::Client,
    pub pool: Pool,
    client: orders_client::Client,
}

/// Starts the app against a fresh database.
pub async fn spawn_app() -> TestApp {
    let config = fresh_database().await;
    spawn_app_on(storage::connect_pool(config, 8)).await
}

/// Starts the app against a database that cannot be reached.
pub async fn spawn_app_without_database() -> TestApp {
    let mut config = tokio_postgres::Config::new();
    // Nothing listens there: connecting fails at once.
    config
        .host_path("/nonexistent-orders-test-socket")
        .user("postgres")
        .dbname("orders");
    spawn_app_on(storage::connect_pool(config, 2)).await
}

async fn spawn_app_on(pool: Pool) -> TestApp {
    let app = Application::build("127.0.0.1:0".parse().unwrap(), pool.clone())
        .await
        .expect("bind a free port");
    let address = format!("http://{}", app.address());
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        client: orders_client::Client::new(&address),
        address,
        http: reqwest::Client::new(),
        pool,
    }
}

impl TestApp {
    /// The generated client, pointed at this app: how other programs call the service.
    pub fn client(&self) -> &orders_client::Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// POSTs `body` exactly as given, declared as JSON: for bodies a serialiser would not
    /// write (malformed, empty, streamed, numbers as written).
    pub async fn post_json_text(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a service and returns its id.
    pub async fn create_service(&self, name: &str) -> String {
        let service = self
            .client
            .service_create()
            .body(service_input(name))
            .send()
            .await
            .unwrap_or_else(|error| panic!("create service {name}: {error}"));
        assert_eq!(
            service.status(),
            StatusCode::CREATED,
            "create service {name}"
        );
        service.into_inner().id
    }

    /// Creates an order and returns it.
    pub async fn create_order(
        &self,
        datetime: &str,
        totalfee: f64,
        services: &[&str],
    ) -> types::Order {
        let order = self
            .client
            .order_create()
            .body(order_input(datetime, totalfee, services))
            .send()
            .await
            .unwrap_or_else(|error| panic!("create order at {datetime}: {error}"));
        assert_eq!(
            order.status(),
            StatusCode::CREATED,
            "create order at {datetime}"
        );
        order.into_inner()
    }

    /// Reads an order that must exist.
    pub async fn order(&self, id: &str) -> types::Order {
        let order = self.client.order_view().id(id).send().await;
        order
            .unwrap_or_else(|error| panic!("view order {id}: {error}"))
            .into_inner()
    }

    /// Every order, following `next_page_token` to the last page.
    pub async fn all_orders(&self) -> Vec<types::Order> {
        let (orders, _pages) = every_page(async |token| {
            let mut request = self.client.order_list();
            if let Some(token) = token {
                request = request.page_token(token);
            }
            let page = request.send().await.unwrap().into_inner();
            (page.orders, page.next_page_token)
        })
        .await;
        orders
    }
}

/// Follows `next_page_token` from the first page to the last. `fetch` is given each page's
/// token (none for the first) and returns that page's items and its `next_page_token`.
/// Returns every item seen and the number of pages.
pub async fn every_page<T>(
    mut fetch: impl AsyncFnMut(Option<String>) -> (Vec<T>, Option<String>),
) -> (Vec<T>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut token = None;
    loop {
        let (page, next) = fetch(token).await;
        items.extend(page);
        pages += 1;
        token = next;
        if token.is_none() {
            return (items, pages);
        }
    }
}

/// `datetime` (RFC 3339, any offset) as the client sends it: in UTC.
pub fn at(datetime: &str) -> DateTime<Utc> {
    datetime
        .parse()
        .unwrap_or_else(|error| panic!("{datetime} is an RFC 3339 date-time: {error}"))
}

pub fn order_input(datetime: &str, totalfee: f64, services: &[&str]) -> types::OrderInput {
    types::OrderInput {
        datetime: at(datetime),
        totalfee,
        services: services
            .iter()
            .map(|id| types::ServiceRef {
                id: (*id).to_owned(),
            })
            .collect(),
    }
}

pub fn service_input(name: &str) -> types::ServiceInput {
    types::ServiceInput {
        name: name.try_into().expect("a name the client accepts"),
    }
}

/// An order body as raw JSON, for requests that go around the typed client.
pub fn order_body(datetime: &str, totalfee: Value, services: &[&str]) -> Value {
    json!({
        "datetime": datetime,
        "totalfee": totalfee,
        "services": services.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
    })
}

/// A response's `ETag` header.
pub fn etag<T>(response: &ResponseValue<T>) -> String {
    header(response.headers(), "etag")
}

/// A header that must be present, as text.
pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("a {name} header in {headers:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The status of a client call's answer, success or documented error.
pub fn status_of<T>(result: &Result<ResponseValue<T>, Error<types::Problem>>) -> StatusCode {
    match result {
        Ok(response) => response.status(),
        Err(error) => error
            .status()
            .unwrap_or_else(|| panic!("an answer from the service: {error}")),
    }
}

/// Asserts that a client call failed with a documented problem of `status` and `code`, decoded
/// into `types::Problem`, served as problem+json and carrying the response's request id; the
/// fields that belong to other codes are absent. Returns the problem with its headers.
pub fn expect_problem<S: std::fmt::Debug>(
    result: Result<S, Error<types::Problem>>,
    status: StatusCode,
    code: &str,
) -> ResponseValue<types::Problem> {
    let problem = match result {
        Err(Error::ErrorResponse(problem)) => problem,
        other => panic!("expected a {status} {code} problem, got {other:?}"),
    };
    assert_eq!(problem.status(), status, "{problem:?}");
    assert_eq!(
        header(problem.headers(), "content-type"),
        "application/problem+json",
        "errors are problem+json"
    );
    let request_id = header(problem.headers(), "x-request-id");
    assert_eq!(problem.status, status.as_u16(), "{problem:?}");
    assert_eq!(problem.code, code, "{problem:?}");
    assert_eq!(problem.request_id, request_id, "{problem:?}");
    assert_eq!(problem.type_, problem_type(code), "{problem:?}");
    assert!(!problem.title.is_empty(), "{problem:?}");
    assert!(!problem.detail.is_empty(), "{problem:?}");
    if code != "ORDER_TIME_CONFLICT" {
        assert_eq!(problem.conflicting_order_id, None, "{problem:?}");
    }
    if code != "UNKNOWN_SERVICE" {
        assert!(problem.unknown_service_ids.is_empty(), "{problem:?}");
    }
    problem
}

/// The problem `type` URI that goes with `code`.
fn problem_type(code: &str) -> String {
    format!(
        "urn:problem-type:orders:{}",
        code.to_lowercase().replace('_', "-")
    )
}

/// Asserts that `response` is a problem+json error with `status` and `code`, in the
/// documented shape, carrying the response's request id; returns the body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let headers: HeaderMap = response.headers().clone();
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "errors are problem+json"
    );
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert_eq!(body["type"], problem_type(code), "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}
