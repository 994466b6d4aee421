//! The application under test: [`spawn_app`] starts it on a free port against a database of
//! the test's own, and [`TestApp`] talks to it, through the generated `orders-client` for
//! everything a typed client can express and over raw HTTP for what it must not be able to
//! send. Also the builders of the bodies tests send. Checking answers is `assertions`' job.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use orders::{startup::Application, storage};
use orders_client::types;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use super::database::{TestDatabase, fresh_database};

/// The application under test, serving on a free port.
pub struct TestApp {
    pub address: String,
    /// Raw HTTP, for requests the typed client cannot or must not send.
    pub http: reqwest::Client,
    pub pool: Pool,
    client: orders_client::Client,
    /// The app's own database, dropped with it; none for an app without a database.
    database: Option<TestDatabase>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The pool first, so that only the sessions still in use have to be ended by force.
        self.pool.close();
        drop(self.database.take());
    }
}

/// Starts the app against a fresh database.
pub async fn spawn_app() -> TestApp {
    let database = fresh_database().await;
    let pool = storage::connect_pool(database.config().clone(), 8);
    spawn_app_on(pool, Some(database)).await
}

/// Starts the app against a database that cannot be reached.
pub async fn spawn_app_without_database() -> TestApp {
    let mut config = tokio_postgres::Config::new();
    // Nothing listens there: connecting fails at once.
    config
        .host_path("/nonexistent-orders-test-socket")
        .user("postgres")
        .dbname("orders");
    spawn_app_on(storage::connect_pool(config, 2), None).await
}

async fn spawn_app_on(pool: Pool, database: Option<TestDatabase>) -> TestApp {
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
        database,
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
