//! The application under test: [`spawn_app`] starts it on a free port against a database of
//! the test's own, and [`TestApp`] talks to it, through the generated `orders-client` for
//! everything a typed client can express and over raw HTTP for what it must not be able to
//! send. Also the builders of the bodies tests send. Checking answers is `assertions`' job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use orders::{
    app::{authentication::KeyRing, key_management},
    config::{DatabaseSettings, DatabaseUrl, Settings},
    domain::{KeyName, Scope},
    startup::Application,
    storage,
};
use orders_client::types;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{
    contract::Recorder,
    database::{PrivateCluster, TestDatabase, connection_string, fresh_database},
    waiting::eventually,
};

/// The application under test, serving on a free port.
pub struct TestApp {
    pub address: String,
    /// Where the metrics are served apart from the API, when the test asked for that.
    pub metrics_address: Option<String>,
    /// Raw HTTP, for requests the typed client cannot or must not send; it sends the test's
    /// key, which holds every scope.
    pub http: reqwest::Client,
    /// Raw HTTP with no credentials at all.
    pub anonymous: reqwest::Client,
    /// The secret of the key [`TestApp::http`] and the typed client send.
    pub secret: String,
    /// The test's own pool on the app's database, without the serving limits, so fixtures may
    /// be as large, and locks held as long, as a test needs.
    pub pool: Pool,
    /// The app's key cache, to wait on instead of sleeping.
    pub keys: KeyRing,
    client: orders_client::Client,
    /// The settings the app was started with, and its database, for another instance like it.
    settings: Settings,
    database_config: tokio_postgres::Config,
    /// Begins the app's shutdown when sent (or dropped).
    stop: Option<oneshot::Sender<()>>,
    /// The app's serving task, which ends once it has drained.
    running: Option<JoinHandle<()>>,
    /// The app's own database, dropped with it; none for an app on another's database.
    database: Option<TestDatabase>,
    /// Every answer the app gave, held against the spec when the app is dropped.
    answers: Recorder,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The pool first, so that only the sessions still in use have to be ended by force.
        self.pool.close();
        drop(self.database.take());
        // Every answer the test got must be one the spec documents (unless the test failed
        // already: its own message is the one to read).
        if !std::thread::panicking() {
            let breaches = self.answers.breaches();
            assert!(
                breaches.is_empty(),
                "{} of the app's {} answers break openapi.yaml:\n{}",
                breaches.len(),
                self.answers.count(),
                breaches.join("\n")
            );
        }
    }
}

/// The name of the key every test app is called with, unless a test says otherwise.
pub const TEST_KEY_NAME: &str = "tester";

/// How often a test app reloads its keys: often, so tests that make and revoke keys are quick.
/// One test checks the production interval.
const TEST_KEY_REFRESH: Duration = Duration::from_millis(100);

/// Starts the app against a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app against a fresh database, with its settings (the production defaults, but
/// for a free port and quick key reloads) changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = fresh_database().await;
    let pool = storage::connect_pool(database.config().clone(), 8);
    let secret = create_key(&pool, TEST_KEY_NAME, &Scope::ALL).await;
    let mut settings = test_settings(database.config());
    configure(&mut settings);
    let config = database.config().clone();
    spawn_app_on(
        pool,
        config,
        settings,
        Some(database),
        secret,
        Reachable::Yes,
    )
    .await
}

/// The settings of an app under test on the database `config` names: the defaults, on a free
/// port, reloading keys often, and not migrating (every test database is a copy of a migrated
/// template).
pub fn test_settings(config: &tokio_postgres::Config) -> Settings {
    Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseSettings::External(DatabaseUrl::new(format!(
            "{} sslmode=disable",
            connection_string(config)
        ))),
        migrate: false,
        key_refresh_interval: TEST_KEY_REFRESH,
        ..Settings::default()
    }
}

/// Starts the app against a cluster of the test's own, with the serving settings it has in
/// production.
pub async fn spawn_app_on_cluster(cluster: &PrivateCluster) -> TestApp {
    let pool = storage::connect_pool(cluster.config(), 2);
    let secret = create_key(&pool, TEST_KEY_NAME, &Scope::ALL).await;
    spawn_app_on(
        pool,
        cluster.config(),
        test_settings(&cluster.config()),
        None,
        secret,
        Reachable::Yes,
    )
    .await
}

/// Creates a key named `name` with `scopes` in the database behind `pool`; returns its secret.
pub async fn create_key(pool: &Pool, name: &str, scopes: &[Scope]) -> String {
    let name = KeyName::parse(name).expect("a valid key name");
    key_management::create(pool, &name, scopes)
        .await
        .unwrap_or_else(|error| panic!("create key {name}: {error}"))
}

/// A raw HTTP client that sends `secret` as its bearer token.
pub fn http_client_with_key(secret: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value: reqwest::header::HeaderValue = format!("Bearer {secret}").parse().unwrap();
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The generated client at `address`, sending `secret`: how other programs call the service.
pub fn typed_client_with_key(address: &str, secret: &str) -> orders_client::Client {
    orders_client::Client::new_with_client(address, http_client_with_key(secret))
}

/// Starts the app against a database that cannot be reached.
pub async fn spawn_app_without_database() -> TestApp {
    let mut config = tokio_postgres::Config::new();
    // Nothing listens there: connecting fails at once.
    config
        .host_path("/nonexistent-orders-test-socket")
        .user("postgres")
        .dbname("orders");
    // No key can be made or loaded: requests that need one are refused before any is checked.
    let secret = orders::app::authentication::IssuedSecret::generate().secret;
    let pool = storage::connect_pool(config.clone(), 2);
    let settings = test_settings(&config);
    spawn_app_on(pool, config, settings, None, secret, Reachable::No).await
}

/// Whether an app's database can be reached, so that its start is finished only once the app
/// has opened the connections it opens in the background.
#[derive(PartialEq)]
enum Reachable {
    Yes,
    No,
}

async fn spawn_app_on(
    pool: Pool,
    database_config: tokio_postgres::Config,
    settings: Settings,
    database: Option<TestDatabase>,
    secret: String,
    reachable: Reachable,
) -> TestApp {
    let app = Application::build(&settings)
        .await
        .expect("the app starts on a free port");
    let address = format!("http://{}", app.address());
    let metrics_address = app
        .metrics_address()
        .map(|address| format!("http://{address}"));
    let keys = app.state().keys.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let answers = Recorder::default();
    let recorder = answers.clone();
    let running = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        app.run_wrapped_until(stopped, |endpoint| recorder.around(endpoint))
            .await
            .expect("the app serves until it is stopped");
    });
    let shared_connections = settings.db_shared_connections;
    let app = TestApp {
        client: typed_client_with_key(&address, &secret),
        http: http_client_with_key(&secret),
        anonymous: reqwest::Client::new(),
        secret,
        address,
        metrics_address,
        pool,
        keys,
        settings,
        database_config,
        stop: Some(stop),
        running: Some(running),
        database,
        answers,
    };
    if reachable == Reachable::Yes {
        app.until_shared_connections_open(shared_connections).await;
    }
    app
}

impl TestApp {
    /// The generated client, pointed at this app: how other programs call the service.
    pub fn client(&self) -> &orders_client::Client {
        &self.client
    }

    /// Inserts `count` orders 3 hours apart from 2000-01-01 on, created by `bulk` and booking
    /// nothing, straight into the database: a large calendar in one statement, for tests of
    /// scale. Returns the session, for the test's own statements on them.
    pub async fn insert_bulk_orders(&self, count: i64) -> deadpool_postgres::Object {
        let client = self.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
                 SELECT timestamptz '2000-01-01 00:00Z' + n * interval '3 hours', 1, 'bulk', 'bulk'
                 FROM generate_series(1, $1::bigint) AS n",
                &[&count],
            )
            .await
            .unwrap();
        client
    }

    /// Holds `table` in `ACCESS EXCLUSIVE` mode, as a migration or a `VACUUM FULL` would, from a
    /// session of the test's own, until [`HeldTransaction::release`].
    pub async fn lock_table(&self, table: &str) -> HeldTransaction {
        self.hold_transaction(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .await
    }

    /// Runs `statements` in a transaction that stays open, holding whatever they lock, until
    /// the returned guard is released (or dropped).
    pub async fn hold_transaction(&self, statements: &str) -> HeldTransaction {
        let session = self.pool.get().await.unwrap();
        session
            .batch_execute(&format!("BEGIN; {statements}"))
            .await
            .unwrap();
        HeldTransaction(Some(session))
    }

    /// Waits until a session on this app's database is waiting for a lock: the request under
    /// test has reached the lock the test holds. `still_pending` is asked on every look, so
    /// the request cannot finish unseen; fails after 10 s, saying `what` was awaited.
    pub async fn wait_for_a_lock_waiter(&self, what: &str, still_pending: impl Fn() -> bool) {
        self.wait_for_lock_waiters(what, 1, still_pending).await;
    }

    /// Like [`TestApp::wait_for_a_lock_waiter`], for `count` sessions waiting at once.
    pub async fn wait_for_lock_waiters(
        &self,
        what: &str,
        count: i64,
        still_pending: impl Fn() -> bool,
    ) {
        // On a connection of its own: inside a transaction of the test's, PostgreSQL would
        // show the same snapshot of pg_stat_activity every time.
        let observer = self.pool.get().await.unwrap();
        let what = format!("{what}: {count} sessions waiting for a lock");
        eventually(&what, Duration::from_secs(10), async || {
            let waiting: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(
                waiting >= count || still_pending(),
                "{what}: it finished without waiting"
            );
            waiting >= count
        })
        .await;
    }

    /// Another instance of the service on this app's database, as a second server behind a
    /// load balancer would be, with this app's settings changed by `configure`. It has a pool
    /// of its own, and its clients send this app's key.
    pub async fn another_instance(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        configure(&mut settings);
        let pool = storage::connect_pool(self.database_config.clone(), 8);
        spawn_app_on(
            pool,
            self.database_config.clone(),
            settings,
            None,
            self.secret.clone(),
            Reachable::Yes,
        )
        .await
    }

    /// Waits until the app has opened its `count` shared connections, which it opens in the
    /// background once started; fails after 10 s.
    ///
    /// Until then, one of them may be authenticating on this test's runtime, and a test that
    /// ended meanwhile would deadlock dropping its database: the drop blocks that runtime, and
    /// PostgreSQL's DROP DATABASE waits for every backend to take note of it, one still
    /// authenticating included, which waits for the client that the drop blocks.
    async fn until_shared_connections_open(&self, count: usize) {
        if count == 0 {
            return;
        }
        eventually(
            "the app's shared connections open",
            Duration::from_secs(10),
            async || self.gauge("db_shared_connections_open").await == count as f64,
        )
        .await;
    }

    /// Begins this app's shutdown, as SIGTERM would, and returns its serving task, which
    /// ends once the app has drained.
    pub fn shut_down(&mut self) -> JoinHandle<()> {
        drop(self.stop.take());
        self.running.take().expect("the app is shut down once")
    }

    /// Creates a key with `scopes`, waits until this app accepts it, and returns its secret.
    pub async fn create_key(&self, name: &str, scopes: &[Scope]) -> String {
        let secret = create_key(&self.pool, name, scopes).await;
        self.wait_for_key(&secret, true).await;
        secret
    }

    /// Waits until this app's key cache accepts `secret` (`true`) or refuses it (`false`),
    /// failing after 5 seconds: the bound the service promises for both.
    pub async fn wait_for_key(&self, secret: &str, accepted: bool) -> Duration {
        let what = if accepted {
            "the key accepted"
        } else {
            "the key refused"
        };
        eventually(what, Duration::from_secs(5), async || {
            self.keys.authenticate(secret).is_ok() == accepted
        })
        .await
    }

    /// The value of the gauge `name` in this app's `/metrics` now (0 when it has none), asked
    /// on a connection closed after it, so that tests of connections see no other.
    pub async fn gauge(&self, name: &str) -> f64 {
        let once = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let text = once.get(self.metrics_url()).send().await.unwrap();
        let text = text.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// The URL of this app's metrics: on their own address if they have one, else the API's.
    pub fn metrics_url(&self) -> String {
        let address = self.metrics_address.as_ref().unwrap_or(&self.address);
        format!("{address}/metrics")
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

    /// Asserts that `etag` is no longer an ETag of the order `id`: a delete under it is 412,
    /// and the order is still there.
    pub async fn assert_order_etag_is_stale(&self, id: &str, etag: &str) {
        let delete = self
            .client
            .order_delete()
            .id(id)
            .if_match(etag)
            .send()
            .await;
        crate::helpers::expect_problem(
            delete,
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED",
        );
        self.order(id).await;
    }

    /// Asserts that the order is just as it was when it had `etag`: the same ETag and body.
    pub async fn assert_order_unchanged(&self, order: &types::Order, etag: &str) {
        let current = self.client.order_view().id(&order.id).send().await.unwrap();
        assert_eq!(crate::helpers::etag(&current), etag, "unchanged");
        assert_eq!(&current.into_inner(), order, "unchanged");
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

/// A transaction a test holds open, with the locks it took (see [`TestApp::hold_transaction`]).
pub struct HeldTransaction(Option<deadpool_postgres::Object>);

impl HeldTransaction {
    /// Rolls the transaction back, ending its locks; its session goes back to the pool.
    pub async fn release(mut self) {
        let session = self.0.take().expect("released once");
        session.batch_execute("ROLLBACK").await.unwrap();
    }
}

impl Drop for HeldTransaction {
    fn drop(&mut self) {
        // Not released (the test failed first): the session is closed, never handed out
        // again inside its transaction, and the lock ends with it.
        if let Some(session) = self.0.take() {
            drop(deadpool_postgres::Object::take(session));
        }
    }
}
