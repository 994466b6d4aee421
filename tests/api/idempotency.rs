//! `Idempotency-Key` on the creates: a retry gets the first answer and writes nothing, over
//! HTTP against the real database, whose rows are counted where it matters.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use futures::future::join_all;
use orders::domain::Scope;
use reqwest::{Response, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, eventually, http_client_with_key, order_body, spawn_app,
    spawn_app_with,
};

/// An answer as received, kept whole so two answers can be compared.
#[derive(Debug)]
struct Received {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Received {
    async fn of(response: Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("read the response body"),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("a JSON body, not {:?}: {error}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("an ASCII header"))
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// Asserts that this is `first` replayed: the same status, body, `Location` and `ETag`,
    /// marked `Idempotent-Replayed: true`.
    fn assert_replay_of(&self, first: &Received) {
        assert_eq!(self.status, first.status, "{}", self.body);
        assert_eq!(self.body, first.body, "the same body, byte for byte");
        for name in ["content-type", "location", "etag"] {
            assert_eq!(self.header(name), first.header(name), "the same {name}");
        }
        assert!(self.replayed(), "marked as a replay: {:?}", self.headers);
        assert!(!first.replayed(), "the first answer is not a replay");
    }
}

/// POSTs `body` as written to `path` with `client`, and `key` as the `Idempotency-Key`.
async fn post(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Received {
    let mut request = client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    Received::of(request.send().await.unwrap()).await
}

/// Creates an order as the test's key, with `key`, from a body as written.
async fn create_order(app: &TestApp, key: Option<&str>, body: &str) -> Received {
    post(app, &app.http, "/orders", key, body).await
}

/// An order body as JSON text.
fn order(datetime: &str, totalfee: Value, services: &[&str]) -> String {
    order_body(datetime, totalfee, services).to_string()
}

/// How many rows `sql` (a `SELECT count(*) ...`) counts in the test's database.
async fn count(app: &TestApp, sql: &str) -> i64 {
    let client = app.pool.get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn orders(app: &TestApp) -> i64 {
    count(app, "SELECT count(*) FROM orders").await
}

async fn records(app: &TestApp) -> i64 {
    count(app, "SELECT count(*) FROM idempotency_records").await
}

/// Asserts that `received` is a fresh 201 for an order, and returns the order's id.
fn created_id(received: &Received) -> String {
    assert_eq!(received.status, StatusCode::CREATED, "{}", received.body);
    let id = received.json()["id"]
        .as_str()
        .expect("an order id")
        .to_owned();
    assert!(
        received
            .header("location")
            .is_some_and(|l| l.ends_with(&format!("/{id}")))
    );
    assert!(received.header("etag").is_some());
    id
}

/// Asserts that `received` is a problem of `status` and `code`; returns its body.
async fn problem(received: &Received, status: StatusCode, code: &str) -> Value {
    let mut response = poem::http::Response::builder().status(received.status);
    for (name, value) in &received.headers {
        response = response.header(name, value);
    }
    let response = response.body(received.body.clone()).unwrap();
    assert_problem(Response::from(response), status, code).await
}

/// Polls `done` every 20 ms until it holds, failing with `what` after 10 s.
/// Makes every write of an idempotency record fail, as a fault of the database would, until
/// [`allow_records`].
async fn refuse_records(database: &tokio_postgres::Client) {
    database
        .batch_execute(
            "CREATE OR REPLACE FUNCTION refuse_records() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'no records today'; END $$;
             CREATE TRIGGER refuse_records BEFORE INSERT ON idempotency_records
                 FOR EACH ROW EXECUTE FUNCTION refuse_records();",
        )
        .await
        .unwrap();
}

async fn allow_records(database: &tokio_postgres::Client) {
    database
        .batch_execute("DROP TRIGGER refuse_records ON idempotency_records")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_the_client_hung_up_gets_the_first_answer() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let body = order("2022-11-01T12:00:00Z", json!(100), &[&service]);

    // Sent in full, then the connection is closed without reading a byte of the answer.
    let address = app.address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST /orders HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\nidempotency-key: hung-up\r\n\
         content-length: {}\r\n\r\n{body}",
        app.secret,
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    eventually(
        "the order is created",
        Duration::from_secs(10),
        async || orders(&app).await == 1,
    )
    .await;

    let retry = create_order(&app, Some("hung-up"), &body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert!(retry.replayed(), "{:?}", retry.headers);
    let id = retry.json()["id"].as_str().unwrap().to_owned();
    let current = Received::of(app.get(&format!("/orders/{id}")).await).await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(retry.json(), current.json(), "the order as it is");
    assert_eq!(retry.header("etag"), current.header("etag"));
    assert_eq!(
        retry.header("location"),
        Some(format!("/orders/{id}").as_str())
    );
    assert_eq!(orders(&app).await, 1);
    assert_eq!(records(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_create_exactly_one_order() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let body = order("2022-11-01T12:00:00Z", json!(100), &[&service]);

    let answers = join_all((0..32).map(|_| create_order(&app, Some("racing"), &body))).await;

    let mut ids = Vec::new();
    let mut fresh = 0;
    for answer in &answers {
        match answer.status {
            StatusCode::CREATED => {
                ids.push(answer.json()["id"].as_str().unwrap().to_owned());
                fresh += usize::from(!answer.replayed());
            }
            StatusCode::CONFLICT => {
                problem(answer, StatusCode::CONFLICT, "IDEMPOTENCY_KEY_IN_USE").await;
                let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
                assert!(retry_after >= 1, "{retry_after}");
            }
            other => panic!("{other}: {}", answer.body),
        }
    }
    assert_eq!(fresh, 1, "one answer is the first: {answers:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "every 201 is for one order: {ids:?}");
    assert_eq!(orders(&app).await, 1);
    assert_eq!(records(&app).await, 1);

    let retry = create_order(&app, Some("racing"), &body).await;
    let first = answers
        .iter()
        .find(|answer| answer.status == StatusCode::CREATED && !answer.replayed())
        .unwrap();
    retry.assert_replay_of(first);
    assert_eq!(orders(&app).await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_and_the_same_request_respelled_is_replayed() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let first = create_order(
        &app,
        Some("respelled"),
        &order("2022-11-01T12:00:00Z", json!(100), &[&service]),
    )
    .await;
    let id = created_id(&first);

    for other in [
        order("2022-11-02T12:00:00Z", json!(100), &[&service]),
        order("2022-11-01T12:00:00Z", json!(101), &[&service]),
        order("2022-11-01T12:00:00.001Z", json!(100), &[&service]),
    ] {
        let refused = create_order(&app, Some("respelled"), &other).await;
        problem(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
        )
        .await;
        assert!(!refused.replayed());
    }
    // Nor is another operation the same request.
    let refused = post(
        &app,
        &app.http,
        "/services",
        Some("respelled"),
        r#"{"name":"Analysis"}"#,
    )
    .await;
    problem(
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    assert_eq!(orders(&app).await, 1, "nothing was written");
    assert_eq!(count(&app, "SELECT count(*) FROM services").await, 1);
    assert_eq!(records(&app).await, 1);

    for same in [
        format!(
            r#"{{"services":[{{"id":"{service}"}}],"totalfee":100.00,"datetime":"2022-11-01T12:00:00Z"}}"#
        ),
        format!(
            "{{\n  \"totalfee\" : 100.0 ,\n  \"datetime\" : \"2022-11-01T14:00:00+02:00\",\n  \
             \"services\" : [ {{ \"id\" : \"{service}\" }} ]\n}}"
        ),
        format!(
            r#"{{"datetime":"2022-11-01T07:00:00.000-05:00","totalfee":1e2,"services":[{{"id":"{service}"}}]}}"#
        ),
    ] {
        let replay = create_order(&app, Some("respelled"), &same).await;
        replay.assert_replay_of(&first);
    }
    assert_eq!(orders(&app).await, 1);
    assert_eq!(
        app.order(&id).await.totalfee,
        100.0,
        "the order is as first created"
    );
}

#[tokio::test]
async fn one_key_string_from_two_api_keys_is_two_keys() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let other = http_client_with_key(&app.create_key("other", &Scope::ALL).await);

    let mine = create_order(
        &app,
        Some("shared"),
        &order("2022-11-01T12:00:00Z", json!(100), &[&service]),
    )
    .await;
    let theirs = post(
        &app,
        &other,
        "/orders",
        Some("shared"),
        &order("2022-11-02T12:00:00Z", json!(100), &[&service]),
    )
    .await;
    let (mine, theirs) = (created_id(&mine), created_id(&theirs));
    assert_ne!(mine, theirs);
    assert_eq!(orders(&app).await, 2);
    assert_eq!(records(&app).await, 2);

    // The first key's request, sent by a third key with the same key string, is not a replay
    // of the first key's answer: it is carried out, and meets the 3-hour rule.
    let third = http_client_with_key(&app.create_key("third", &Scope::ALL).await);
    let clash = post(
        &app,
        &third,
        "/orders",
        Some("shared"),
        &order("2022-11-01T12:00:00Z", json!(100), &[&service]),
    )
    .await;
    let body = problem(&clash, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT").await;
    assert_eq!(body["conflicting_order_id"], mine.as_str());
    assert!(!clash.replayed());
    assert_eq!(orders(&app).await, 2);
}

#[tokio::test]
async fn refusals_the_write_decided_are_replayed_even_once_they_no_longer_hold() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;

    // 409 ORDER_TIME_CONFLICT, replayed after the conflicting order is gone.
    let blocker = app
        .create_order("2022-11-01T12:00:00Z", 1.0, &[&service])
        .await;
    let late = order("2022-11-01T13:00:00Z", json!(5), &[&service]);
    let conflict = create_order(&app, Some("conflict"), &late).await;
    let body = problem(&conflict, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT").await;
    assert_eq!(body["conflicting_order_id"], blocker.id.as_str());
    let deleted = app
        .http
        .delete(app.url(&format!("/orders/{}", blocker.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    create_order(&app, Some("conflict"), &late)
        .await
        .assert_replay_of(&conflict);
    assert_eq!(orders(&app).await, 0, "the replay wrote nothing");
    // The slot is free now: without the key the same request is carried out.
    created_id(&create_order(&app, None, &late).await);

    // 422 UNKNOWN_SERVICE, replayed after the service has come to exist.
    let unknown = order("2022-11-10T12:00:00Z", json!(5), &["5000"]);
    let missing = create_order(&app, Some("unknown"), &unknown).await;
    let body = problem(
        &missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_SERVICE",
    )
    .await;
    assert_eq!(body["unknown_service_ids"], json!(["5000"]));
    app.pool
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO services (id, name, created_by, updated_by)
             VALUES (5000, 'Late', 'tester', 'tester')",
            &[],
        )
        .await
        .unwrap();
    create_order(&app, Some("unknown"), &unknown)
        .await
        .assert_replay_of(&missing);
    assert_eq!(orders(&app).await, 1);

    // 409 SERVICE_NAME_TAKEN, replayed after the name is free again.
    let taken = post(
        &app,
        &app.http,
        "/services",
        Some("taken"),
        r#"{"name":"Inspection"}"#,
    )
    .await;
    problem(&taken, StatusCode::CONFLICT, "SERVICE_NAME_TAKEN").await;
    for order in app.all_orders().await {
        app.http
            .delete(app.url(&format!("/orders/{}", order.id)))
            .send()
            .await
            .unwrap();
    }
    let deleted = app
        .http
        .delete(app.url(&format!("/services/{service}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    post(
        &app,
        &app.http,
        "/services",
        Some("taken"),
        r#"{"name":"Inspection"}"#,
    )
    .await
    .assert_replay_of(&taken);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM services WHERE name = 'Inspection'"
        )
        .await,
        0
    );

    // And a 201 of POST /services.
    let created = post(
        &app,
        &app.http,
        "/services",
        Some("service"),
        r#"{"name":"Analysis"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(created.header("location").is_some() && created.header("etag").is_some());
    post(
        &app,
        &app.http,
        "/services",
        Some("service"),
        r#"{ "name" : "Analysis" }"#,
    )
    .await
    .assert_replay_of(&created);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM services WHERE name = 'Analysis'"
        )
        .await,
        1
    );
    assert_eq!(records(&app).await, 4);
}

#[tokio::test]
async fn requests_refused_before_the_write_are_not_remembered() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let body = order("2022-11-01T12:00:00Z", json!(100), &[&service]);

    // 400: a malformed body.
    let malformed = create_order(&app, Some("k400"), &body[..body.len() - 1]).await;
    problem(&malformed, StatusCode::BAD_REQUEST, "MALFORMED_JSON").await;
    assert_eq!(records(&app).await, 0);
    let corrected = create_order(&app, Some("k400"), &body).await;
    created_id(&corrected);
    assert!(!corrected.replayed());

    // 415: not JSON.
    let body = order("2022-11-02T12:00:00Z", json!(100), &[&service]);
    let not_json = app
        .http
        .post(app.url("/orders"))
        .header("content-type", "text/plain")
        .header("idempotency-key", "k415")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_problem(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    created_id(&create_order(&app, Some("k415"), &body).await);

    // 401: no credentials.
    let body = order("2022-11-03T12:00:00Z", json!(100), &[&service]);
    let anonymous = post(&app, &app.anonymous, "/orders", Some("k401"), &body).await;
    problem(&anonymous, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    created_id(&create_order(&app, Some("k401"), &body).await);

    // 403: a key that may not write orders, which is then given the scope.
    let secret = app.create_key("reader", &[Scope::OrdersRead]).await;
    let reader = http_client_with_key(&secret);
    let body = order("2022-11-04T12:00:00Z", json!(100), &[&service]);
    let forbidden = post(&app, &reader, "/orders", Some("k403"), &body).await;
    problem(&forbidden, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    assert_eq!(records(&app).await, 3, "only the three creates");
    app.pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE api_keys SET scopes = ARRAY['orders:read', 'orders:write'] WHERE name = 'reader'",
            &[],
        )
        .await
        .unwrap();
    // A malformed body without a key tells when the app has seen the new scope: 400, not 403.
    eventually(
        "the new scope is seen",
        Duration::from_secs(10),
        async || post(&app, &reader, "/orders", None, "{").await.status == StatusCode::BAD_REQUEST,
    )
    .await;
    let allowed = post(&app, &reader, "/orders", Some("k403"), &body).await;
    created_id(&allowed);
    assert!(!allowed.replayed());
    assert_eq!(orders(&app).await, 4);
    assert_eq!(records(&app).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_whose_first_request_is_under_way_is_in_use() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let body = order("2022-11-01T12:00:00Z", json!(100), &[&service]);

    // An order at the same time, not yet committed: the first request's insert waits to see
    // whether it will be.
    let lock = app
        .hold_transaction(
            "INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
             VALUES ('2022-11-01T12:00:00Z', 1, 'seed', 'seed')",
        )
        .await;
    let first = {
        let (client, url, body) = (app.http.clone(), app.url("/orders"), body.clone());
        tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("idempotency-key", "held")
                .body(body)
                .send()
                .await
                .unwrap();
            Received::of(response).await
        })
    };
    app.wait_for_a_lock_waiter("the first request waits for the lock", || {
        !first.is_finished()
    })
    .await;

    let started = Instant::now();
    let second = create_order(&app, Some("held"), &body).await;
    let waited = started.elapsed();
    problem(&second, StatusCode::CONFLICT, "IDEMPOTENCY_KEY_IN_USE").await;
    assert!(
        second.header("retry-after").is_some(),
        "{:?}",
        second.headers
    );
    assert!(
        waited < Duration::from_secs(2),
        "answered at once, not after {waited:?}"
    );
    assert!(!first.is_finished(), "the first is still held");

    lock.release().await;
    let first = first.await.unwrap();
    created_id(&first);
    assert!(!first.replayed());
    create_order(&app, Some("held"), &body)
        .await
        .assert_replay_of(&first);
    assert_eq!(orders(&app).await, 1);
    assert_eq!(records(&app).await, 1);
}

#[tokio::test]
async fn invalid_keys_are_refused_and_quoted_and_bare_keys_are_one() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let body = order("2022-11-01T12:00:00Z", json!(100), &[&service]);

    let long = "k".repeat(256);
    let quoted_long = format!("\"{}\"", "k".repeat(256));
    let invalid: [&[u8]; 8] = [
        b"",
        long.as_bytes(),
        quoted_long.as_bytes(),
        "\u{e9}t\u{e9}".as_bytes(),
        b"a\tb",
        b"\"unterminated",
        b"a b",
        b"\"\"",
    ];
    for key in invalid {
        let response = app
            .http
            .post(app.url("/orders"))
            .header("content-type", "application/json")
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let received = Received::of(response).await;
        assert_eq!(
            received.status,
            StatusCode::BAD_REQUEST,
            "{:?}: {}",
            String::from_utf8_lossy(key),
            received.body
        );
        let problem = problem(&received, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{key:?}: {problem}"
        );
    }
    assert_eq!(orders(&app).await, 0, "nothing was written");
    assert_eq!(records(&app).await, 0);

    // The longest key there is, either way.
    let longest = "k".repeat(255);
    let first = create_order(&app, Some(&longest), &body).await;
    created_id(&first);
    create_order(&app, Some(&format!("\"{longest}\"")), &body)
        .await
        .assert_replay_of(&first);

    let body = order("2022-11-02T12:00:00Z", json!(100), &[&service]);
    let quoted = create_order(&app, Some("\"abc\""), &body).await;
    created_id(&quoted);
    create_order(&app, Some("abc"), &body)
        .await
        .assert_replay_of(&quoted);
    // Escapes are undone before keys are compared.
    let body = order("2022-11-03T12:00:00Z", json!(100), &[&service]);
    let escaped = create_order(&app, Some(r#""a\\b""#), &body).await;
    created_id(&escaped);
    create_order(&app, Some(r"a\b"), &body)
        .await
        .assert_replay_of(&escaped);
    assert_eq!(orders(&app).await, 3);
    assert_eq!(records(&app).await, 3);
    assert_eq!(
        count(
            &app,
            r"SELECT count(*) FROM idempotency_records WHERE idempotency_key IN ('abc', 'a\b')"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_answer_is_purged_and_its_key_can_be_used_again() {
    let app =
        spawn_app_with(|settings| settings.idempotency_retention = Duration::from_secs(2)).await;
    let service = app.create_service("Inspection").await;
    // Before the record is written: it cannot be older than this.
    let kept = Instant::now();
    let first = create_order(
        &app,
        Some("short-lived"),
        &order("2022-11-01T12:00:00Z", json!(100), &[&service]),
    )
    .await;
    created_id(&first);
    let other = order("2022-11-02T12:00:00Z", json!(100), &[&service]);
    let refused = create_order(&app, Some("short-lived"), &other).await;
    problem(
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    assert_eq!(records(&app).await, 1);

    eventually(
        "the purge deletes the expired record",
        Duration::from_secs(10),
        async || records(&app).await == 0,
    )
    .await;
    assert!(
        kept.elapsed() >= Duration::from_millis(1900),
        "not purged before it expired: {:?}",
        kept.elapsed()
    );

    let again = create_order(&app, Some("short-lived"), &other).await;
    created_id(&again);
    assert!(!again.replayed());
    assert_eq!(orders(&app).await, 2);
    assert_eq!(records(&app).await, 1);
}

#[tokio::test]
async fn an_answer_is_kept_exactly_when_its_create_is_committed() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let body = order("2022-11-01T12:00:00Z", json!(100), &[&service]);

    let created = create_order(&app, Some("atomic"), &body).await;
    let id = created_id(&created);
    let database = app.pool.get().await.unwrap();
    // Kept as the order's document, in the statement that created it.
    let record = database
        .query_one(
            "SELECT status, order_document ->> 'id' AS order_id FROM idempotency_records
             WHERE idempotency_key = 'atomic'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(record.get::<_, i16>("status"), 201);
    assert_eq!(
        record.get::<_, Option<String>>("order_id"),
        Some(id.clone())
    );
    assert_eq!((orders(&app).await, records(&app).await), (1, 1));
    // Replayed as it was first sent, though the order and its service have changed since.
    for (path, body) in [
        (
            format!("/services/{service}"),
            r#"{"name":"Inspection and repair"}"#.to_owned(),
        ),
        (
            format!("/orders/{id}"),
            order("2022-11-01T13:00:00Z", json!(120), &[&service]),
        ),
    ] {
        let changed = app
            .http
            .put(app.url(&path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), StatusCode::OK, "PUT {path}");
    }
    create_order(&app, Some("atomic"), &body)
        .await
        .assert_replay_of(&created);
    let order_id: i64 = id.parse().unwrap();
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM orders WHERE id = {order_id}")
        )
        .await,
        1
    );

    // Refused before the write: neither.
    let invalid = create_order(&app, Some("atomic-invalid"), r#"{"datetime":"soon"}"#).await;
    assert_eq!(invalid.status.as_u16() / 100, 4, "{}", invalid.body);
    assert_eq!((orders(&app).await, records(&app).await), (1, 1));

    // The answer cannot be kept: the order is not kept either, and the key stays free.
    refuse_records(&database).await;
    let body = order("2022-11-02T12:00:00Z", json!(100), &[&service]);
    let failed = create_order(&app, Some("atomic-failed"), &body).await;
    assert_eq!(
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        failed.body
    );
    assert_eq!((orders(&app).await, records(&app).await), (1, 1));
    allow_records(&database).await;
    let retried = create_order(&app, Some("atomic-failed"), &body).await;
    created_id(&retried);
    assert!(!retried.replayed(), "a 500 is not remembered");
    assert_eq!((orders(&app).await, records(&app).await), (2, 2));
}

#[tokio::test]
async fn an_expired_answer_not_yet_purged_gives_way_to_the_next_request_with_its_key() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let first = create_order(
        &app,
        Some("reused"),
        &order("2022-11-01T12:00:00Z", json!(100), &[&service]),
    )
    .await;
    let first_id = created_id(&first);
    let database = app.pool.get().await.unwrap();
    // Past the retention; the purge, which runs every minute, has not reached it.
    database
        .execute(
            "UPDATE idempotency_records SET created_at = now() - interval '25 hours'
             WHERE idempotency_key = 'reused'",
            &[],
        )
        .await
        .unwrap();
    let kept_order = async || {
        let row = database
            .query_one(
                "SELECT order_document ->> 'id' AS order_id, body IS NOT NULL AS rendered
                 FROM idempotency_records WHERE idempotency_key = 'reused'",
                &[],
            )
            .await
            .unwrap();
        (
            row.get::<_, Option<String>>("order_id"),
            row.get::<_, bool>("rendered"),
        )
    };

    // The answer cannot be kept: the create is undone with it, and the expired answer stays.
    refuse_records(&database).await;
    let other = order("2022-11-02T12:00:00Z", json!(100), &[&service]);
    let failed = create_order(&app, Some("reused"), &other).await;
    assert_eq!(
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        failed.body
    );
    assert_eq!((orders(&app).await, records(&app).await), (1, 1));
    assert_eq!(kept_order().await, (Some(first_id), false));
    allow_records(&database).await;

    // Another request with the key is carried out, and its answer takes the expired one's place.
    let second = create_order(&app, Some("reused"), &other).await;
    created_id(&second);
    assert!(!second.replayed(), "the expired answer is not replayed");
    assert_eq!((orders(&app).await, records(&app).await), (2, 1));
    assert_eq!(kept_order().await, (None, true));
    create_order(&app, Some("reused"), &other)
        .await
        .assert_replay_of(&second);
    assert_eq!(orders(&app).await, 2);
}

#[tokio::test]
async fn an_order_kept_on_a_database_in_another_time_zone_is_replayed_exactly() {
    let app = spawn_app().await;
    // A zone whose offset in 1850 has seconds (local mean time), which RFC 3339 cannot write.
    let database = app.pool.get().await.unwrap();
    database
        .batch_execute(
            "DO $$ BEGIN
                 EXECUTE format('ALTER DATABASE %I SET timezone = %L',
                                current_database(), 'Europe/Amsterdam');
             END $$",
        )
        .await
        .unwrap();
    database
        .batch_execute("SET timezone = 'Europe/Amsterdam'")
        .await
        .unwrap();
    let written: String = database
        .query_one("SELECT '1850-06-01T12:00:00Z'::timestamptz::text", &[])
        .await
        .unwrap()
        .get(0);
    database.batch_execute("RESET timezone").await.unwrap();
    assert_eq!(
        written.matches(':').count(),
        4,
        "an offset with seconds: {written}"
    );
    // An instance whose sessions start after the change, as the database gives them.
    let elsewhere = app.another_instance(|_| {}).await;
    let service = elsewhere.create_service("Inspection").await;
    let body = order("1850-06-01T12:00:00Z", json!(100), &[&service]);

    let first = create_order(&elsewhere, Some("long-ago"), &body).await;
    created_id(&first);
    create_order(&elsewhere, Some("long-ago"), &body)
        .await
        .assert_replay_of(&first);
    let feed = Received::of(elsewhere.get("/events?limit=10").await).await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.body);
}
