//! API keys and scopes over HTTP: every protected operation the spec lists refuses a caller
//! without a current key (401) or without the scope the spec states (403), lets one with just
//! that scope through, and changes nothing when it refuses; new and revoked keys take effect
//! within the promised bound; and writes record which key made them.

use std::time::{Duration, Instant};

use orders::{
    app::{authentication::IssuedSecret, key_management},
    config::{DEFAULT_KEY_REFRESH_INTERVAL, DatabaseSettings, DatabaseUrl},
    domain::Scope,
    storage::seed,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    SlowReplies, TestApp, assert_problem, create_key, etag, eventually, header,
    http_client_with_key, order_body, spawn_app, spawn_app_with,
};

/// An operation of the published spec.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    /// The path template, as the spec writes it (`/orders/{id}`).
    path: String,
    operation_id: String,
    /// `Some(scope)` for a protected operation, as its `x-required-scopes` states; `None` for
    /// a public one (`security: []`).
    scope: Option<Scope>,
}

impl Operation {
    fn is_write(&self) -> bool {
        matches!(self.method, Method::POST | Method::PUT | Method::DELETE)
    }

    fn resource(&self) -> &str {
        self.path.trim_start_matches('/').split('/').next().unwrap()
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.method, self.path, self.operation_id)
    }
}

/// Every operation of the spec the app publishes, with the security each declares. Fails on
/// an operation that is neither plainly public nor protected by the API key with one scope.
async fn published_operations(app: &TestApp) -> Vec<Operation> {
    let response = app
        .anonymous
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the spec is public");
    let spec: Value = response.json().await.unwrap();
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("the spec has paths") {
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !matches!(
                method,
                Method::GET
                    | Method::HEAD
                    | Method::POST
                    | Method::PUT
                    | Method::DELETE
                    | Method::PATCH
            ) {
                continue;
            }
            let operation_id = operation["operationId"].as_str().unwrap().to_owned();
            let scope = match &operation["security"] {
                Value::Array(requirements) if requirements.is_empty() => {
                    assert_eq!(
                        operation.get("x-required-scopes"),
                        None,
                        "{operation_id}: public, yet it states a scope"
                    );
                    None
                }
                security => {
                    assert_eq!(
                        security,
                        &json!([{ "ApiKey": [] }]),
                        "{operation_id}: protected by the API key"
                    );
                    let scopes = operation["x-required-scopes"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{operation_id}: x-required-scopes"));
                    assert_eq!(scopes.len(), 1, "{operation_id}: exactly one scope");
                    let scope = scopes[0].as_str().unwrap();
                    Some(
                        scope
                            .parse()
                            .unwrap_or_else(|error| panic!("{operation_id}: {error}")),
                    )
                }
            };
            operations.push(Operation {
                method: method.clone(),
                path: path.clone(),
                operation_id,
                scope,
            });
        }
    }
    assert!(
        operations.iter().filter(|op| op.scope.is_some()).count() >= 10,
        "the spec lists the orders and services operations: {operations:?}"
    );
    operations
}

/// What one request to an operation needs: a concrete path, and a valid body for a write
/// that reads one. Made fresh for each operation, so a DELETE or PUT that goes through leaves
/// the next operation's records alone.
struct Target {
    path: String,
    body: Option<Value>,
}

/// Creates the records `operation` acts on: a service of its own (not booked, so it can be
/// deleted) and an order of its own, at a time no other order of the test is near.
async fn target(app: &TestApp, operation: &Operation, index: usize, booked: &str) -> Target {
    // Each index has a 40-hour slot: the order at its start, the order a POST creates 20 h later.
    let slot = |hours: usize| {
        let start = chrono::DateTime::parse_from_rfc3339("2031-01-01T00:00:00Z").unwrap();
        (start + chrono::Duration::hours((index * 40 + hours) as i64))
            .to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let service = app.create_service(&format!("Fixture {index}")).await;
    let order = app.create_order(&slot(0), 10.0, &[booked]).await;
    let path = match operation.resource() {
        // Its window holds the test's own orders.
        "free-slots" => format!("/free-slots?from={}&to={}", slot(0), slot(40)),
        "orders" => operation.path.replace("{id}", &order.id),
        "services" => operation.path.replace("{id}", &service),
        "events" => "/events?after=now".to_owned(),
        other => panic!("{operation}: no fixture for the resource {other}"),
    };
    assert!(
        !path.contains('{'),
        "{operation}: unfilled parameter in {path}"
    );
    let body = match (&operation.method, operation.resource()) {
        (&Method::POST, "orders") => Some(order_body(&slot(20), json!(12.5), &[booked])),
        (&Method::PUT, "orders") => Some(order_body(&slot(0), json!(11), &[booked])),
        (&Method::POST | &Method::PUT, "services") => {
            Some(json!({ "name": format!("Written {index}") }))
        }
        (&Method::POST | &Method::PUT | &Method::PATCH, _) => {
            panic!("{operation}: no body for it")
        }
        _ => None,
    };
    Target { path, body }
}

/// Sends `operation` to `target` with `client`.
async fn send(
    app: &TestApp,
    client: &reqwest::Client,
    operation: &Operation,
    target: &Target,
) -> reqwest::Response {
    let mut request = client.request(operation.method.clone(), app.url(&target.path));
    if let Some(body) = &target.body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

/// Everything a write could change, as the service lists it.
async fn snapshot(app: &TestApp) -> Value {
    let mut everything = json!({});
    for resource in ["orders", "services"] {
        let response = app
            .get(&format!("/{resource}?page_size=1000"))
            .await
            .error_for_status()
            .unwrap();
        let page: Value = response.json().await.unwrap();
        assert_eq!(page.get("next_page_token"), None, "one page holds them all");
        everything[resource] = page[resource].clone();
    }
    everything
}

/// Asserts a 401 UNAUTHENTICATED problem that says how to authenticate; returns its detail.
async fn assert_unauthenticated(response: reqwest::Response, what: &str) -> String {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = assert_problem(response, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    assert!(
        challenge
            .as_deref()
            .is_some_and(|value| value.starts_with("Bearer")),
        "{what}: WWW-Authenticate is {challenge:?}"
    );
    body["detail"].as_str().unwrap().to_owned()
}

/// A key name for a set of scopes (names cannot hold `:`).
fn name_for(prefix: &str, scope: Scope) -> String {
    format!("{prefix}-{}", scope.as_str().replace(':', "-"))
}

/// A key that was revoked, and that the app now refuses.
async fn revoked_key(app: &TestApp, name: &str) -> String {
    let secret = app.create_key(name, &Scope::ALL).await;
    key_management::revoke(&app.pool, name).await.unwrap();
    app.wait_for_key(&secret, false).await;
    secret
}

#[tokio::test]
async fn every_protected_operation_refuses_callers_without_a_current_key_or_its_stated_scope() {
    let app = spawn_app().await;
    let operations = published_operations(&app).await;
    let booked = app.create_service("Booked").await;
    let revoked = http_client_with_key(&revoked_key(&app, "revoked").await);
    let unknown = http_client_with_key(&IssuedSecret::generate().secret);
    let garbage = http_client_with_key("not-a-key");
    let mut all_but = Vec::new();
    let mut only = Vec::new();
    for scope in Scope::ALL {
        let others: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s != scope).collect();
        let secret = app.create_key(&name_for("all-but", scope), &others).await;
        all_but.push((scope, http_client_with_key(&secret)));
        let secret = app.create_key(&name_for("only", scope), &[scope]).await;
        only.push((scope, http_client_with_key(&secret)));
    }
    let client_for = |clients: &[(Scope, reqwest::Client)], scope: Scope| {
        clients
            .iter()
            .find(|(held, _)| *held == scope)
            .map(|(_, client)| client.clone())
            .unwrap()
    };

    for (index, operation) in operations.iter().enumerate() {
        let Some(scope) = operation.scope else {
            let response = app
                .anonymous
                .request(operation.method.clone(), app.url(&operation.path))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{operation} is public: it answers without a key"
            );
            continue;
        };
        let target = target(&app, operation, index, &booked).await;
        let before = snapshot(&app).await;

        for (what, client) in [
            ("no key", &app.anonymous),
            ("an unknown key", &unknown),
            ("a garbage key", &garbage),
            ("a revoked key", &revoked),
        ] {
            let response = send(&app, client, operation, &target).await;
            assert_unauthenticated(response, &format!("{operation} with {what}")).await;
        }
        if operation.method == Method::GET {
            let head = app
                .anonymous
                .head(app.url(&target.path))
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.status(),
                StatusCode::UNAUTHORIZED,
                "HEAD {}",
                target.path
            );
            assert!(header(head.headers(), "www-authenticate").starts_with("Bearer"));
        }
        let response = send(&app, &client_for(&all_but, scope), operation, &target).await;
        let problem = assert_problem(response, StatusCode::FORBIDDEN, "FORBIDDEN").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains(scope.as_str())),
            "{operation}: the 403 names {scope}: {problem}"
        );
        assert_eq!(
            snapshot(&app).await,
            before,
            "{operation}: a refused request changed nothing"
        );

        let response = send(&app, &client_for(&only, scope), operation, &target).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(
            status.is_success(),
            "{operation}: a key with just {scope}, the scope the spec states, is let through: {status} {text}"
        );
    }
}

#[tokio::test]
async fn the_documentation_and_health_operations_answer_without_a_key() {
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/openapi.yaml",
        "/docs",
    ] {
        let response = app.anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_read_only_key_reads_everything_and_writes_nothing() {
    let app = spawn_app().await;
    let operations = published_operations(&app).await;
    let booked = app.create_service("Booked").await;
    let reader = http_client_with_key(&app.create_key("reader", &[Scope::OrdersRead]).await);

    let protected = operations.iter().filter(|op| op.scope.is_some());
    let mut reads = 0;
    let mut writes = 0;
    for (index, operation) in protected.enumerate() {
        let target = target(&app, operation, index, &booked).await;
        let before = snapshot(&app).await;
        let response = send(&app, &reader, operation, &target).await;
        if operation.is_write() {
            writes += 1;
            assert_problem(response, StatusCode::FORBIDDEN, "FORBIDDEN").await;
            assert_eq!(snapshot(&app).await, before, "{operation} changed nothing");
        } else {
            reads += 1;
            assert_eq!(response.status(), StatusCode::OK, "{operation}");
            let head = reader.head(app.url(&target.path)).send().await.unwrap();
            assert_eq!(head.status(), StatusCode::OK, "HEAD {}", target.path);
        }
    }
    assert_eq!((reads, writes), (6, 6), "every read and write of the spec");
}

#[tokio::test]
async fn a_refused_credential_is_never_told_whether_its_key_exists() {
    let app = spawn_app().await;
    let revoked = revoked_key(&app, "revoked").await;
    let mut tampered = app.secret.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let truncated = app.secret[..app.secret.len() - 1].to_owned();
    // The lookup id of a current key with another secret: the key exists, the secret is wrong.
    let lookup_id_of_current = {
        let lookup_end = "ord_".len() + 16;
        let other = IssuedSecret::generate().secret;
        format!("{}{}", &app.secret[..lookup_end], &other[lookup_end..])
    };

    let mut details = Vec::new();
    for (what, secret) in [
        ("unknown", IssuedSecret::generate().secret),
        ("revoked", revoked),
        ("malformed", "not-a-key".to_owned()),
        ("malformed, prefixed", "ord_zz".to_owned()),
        ("truncated", truncated),
        ("tampered", tampered),
        ("with a current key's lookup id", lookup_id_of_current),
    ] {
        let response = http_client_with_key(&secret)
            .get(app.url("/orders"))
            .send()
            .await
            .unwrap();
        let detail = assert_unauthenticated(response, what).await;
        details.push((what, detail));
    }
    let (_, first) = &details[0];
    for (what, detail) in &details {
        assert_eq!(detail, first, "the {what} key is refused in the same words");
    }
    for word in ["revoked", "exist", "unknown key", "not found"] {
        assert!(!first.contains(word), "{first:?} says nothing of the key");
    }
}

/// Polls `path` with `secret` until the answer is `wanted` (as 2xx or 401), failing after
/// `bound`; returns how long it took.
async fn time_until(app: &TestApp, secret: &str, accepted: bool, bound: Duration) -> Duration {
    let client = http_client_with_key(secret);
    let (wanted, what) = if accepted {
        (StatusCode::OK, "the key accepted")
    } else {
        (StatusCode::UNAUTHORIZED, "the key refused")
    };
    eventually(what, bound, async || {
        let status = client
            .get(app.url("/orders"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            matches!(status, StatusCode::OK | StatusCode::UNAUTHORIZED),
            "GET /orders answered {status}"
        );
        status == wanted
    })
    .await
}

#[tokio::test]
async fn at_the_production_refresh_interval_new_keys_work_and_revoked_ones_stop_within_5_seconds() {
    let app =
        spawn_app_with(|settings| settings.key_refresh_interval = DEFAULT_KEY_REFRESH_INTERVAL)
            .await;
    let bound = Duration::from_secs(5);

    let secret = create_key(&app.pool, "newcomer", &[Scope::OrdersRead]).await;
    let accepted_after = time_until(&app, &secret, true, bound).await;
    key_management::revoke(&app.pool, "newcomer").await.unwrap();
    let refused_after = time_until(&app, &secret, false, bound).await;

    eprintln!("accepted after {accepted_after:?}, refused after {refused_after:?}");
    assert_eq!(
        app.get("/orders").await.status(),
        StatusCode::OK,
        "the other keys still work"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_during_a_slow_reload_is_refused_within_5_seconds_of_its_revocation() {
    // Arrange: an app whose database answers come back late, through a proxy; the test's own
    // sessions go straight to the database.
    let mut network = None;
    let app = spawn_app_with(|settings| {
        let DatabaseSettings::External(url) = &settings.database else {
            unreachable!("test apps are given their database");
        };
        let proxy = SlowReplies::start(url.expose().parse().unwrap());
        settings.database = DatabaseSettings::External(DatabaseUrl::new(proxy.connection_string()));
        network = Some(proxy);
    })
    .await;
    let network = network.unwrap();
    let secret = app.create_key("departing", &[Scope::OrdersRead]).await;

    // Each reload now takes 1.2 s, under its 2 s bound. Once one has ended after that long,
    // the next has begun at once: its query is answered by the database, with the key still
    // current, while its answer is on its way.
    network.delay_replies(Duration::from_millis(1200));
    let loads = app.keys.loads();
    eventually(
        "two reloads over the slow network",
        Duration::from_secs(10),
        async || app.keys.loads() >= loads + 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act: revoke the key, then hold the table, so that no later reload gets through.
    key_management::revoke(&app.pool, "departing")
        .await
        .unwrap();
    let revoked = Instant::now();
    assert!(
        app.keys.authenticate(&secret).is_ok(),
        "the keys loaded before the revocation are still in use"
    );
    let lock = app.lock_table("api_keys").await;

    // Assert: refused within 5 s of the revocation, though the last reload to succeed
    // answered after it.
    eventually("the key refused", Duration::from_secs(10), async || {
        app.keys.authenticate(&secret).is_err()
    })
    .await;
    let refused_after = revoked.elapsed();
    eprintln!("refused {refused_after:?} after its revocation");
    assert!(
        refused_after <= Duration::from_secs(5),
        "accepted for {refused_after:?} after its revocation"
    );

    // And once the database answers promptly again, the keys are reloaded by themselves.
    network.delay_replies(Duration::ZERO);
    lock.release().await;
    app.wait_for_key(&app.secret, true).await;
    assert_eq!(
        app.keys.authenticate(&secret),
        Err(orders::app::authentication::AuthError::Invalid)
    );
}

#[tokio::test]
async fn a_key_made_or_revoked_through_one_instance_is_taken_up_by_every_instance_within_5_seconds()
{
    let production = |settings: &mut orders::config::Settings| {
        settings.key_refresh_interval = DEFAULT_KEY_REFRESH_INTERVAL;
    };
    let first = spawn_app_with(production).await;
    let second = first.another_instance(production).await;
    let third = first.another_instance(production).await;
    let bound = Duration::from_secs(5);

    // Made and revoked with the CLI's own functions, against the one database.
    let secret = create_key(&first.pool, "shared", &[Scope::OrdersRead]).await;
    for instance in [&first, &second, &third] {
        time_until(instance, &secret, true, bound).await;
    }
    key_management::revoke(&first.pool, "shared").await.unwrap();
    let started = Instant::now();
    for instance in [&first, &second, &third] {
        // Each instance within 5 s of the revoke, not of the previous instance's refusal.
        let left = bound.saturating_sub(started.elapsed());
        time_until(instance, &secret, false, left).await;
    }
}

async fn json_of(response: reqwest::Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn writes_record_the_key_that_created_and_the_key_that_last_changed_a_record() {
    let app = spawn_app().await;
    let alice = http_client_with_key(&app.create_key("alice", &Scope::ALL).await);
    let bob = http_client_with_key(&app.create_key("bob", &Scope::ALL).await);

    let service = alice
        .post(app.url("/services"))
        .json(&json!({ "name": "Calibration" }))
        .send()
        .await
        .unwrap();
    let service = json_of(service, StatusCode::CREATED).await;
    assert_eq!(
        (&service["created_by"], &service["updated_by"]),
        (&json!("alice"), &json!("alice"))
    );
    let id = service["id"].as_str().unwrap();
    let renamed = bob
        .put(app.url(&format!("/services/{id}")))
        .json(&json!({ "name": "Recalibration" }))
        .send()
        .await
        .unwrap();
    let renamed = json_of(renamed, StatusCode::OK).await;
    assert_eq!(
        (&renamed["created_by"], &renamed["updated_by"]),
        (&json!("alice"), &json!("bob"))
    );
    let read = json_of(app.get(&format!("/services/{id}")).await, StatusCode::OK).await;
    assert_eq!(read, renamed, "as stored");

    let order = alice
        .post(app.url("/orders"))
        .json(&order_body("2031-01-01T10:00:00Z", json!(10), &[id]))
        .send()
        .await
        .unwrap();
    let order = json_of(order, StatusCode::CREATED).await;
    assert_eq!(
        (&order["created_by"], &order["updated_by"]),
        (&json!("alice"), &json!("alice"))
    );
    let order_id = order["id"].as_str().unwrap();
    let replaced = bob
        .put(app.url(&format!("/orders/{order_id}")))
        .json(&order_body("2031-01-01T11:00:00Z", json!(20), &[id]))
        .send()
        .await
        .unwrap();
    let replaced = json_of(replaced, StatusCode::OK).await;
    assert_eq!(
        (&replaced["created_by"], &replaced["updated_by"]),
        (&json!("alice"), &json!("bob"))
    );
    let read = json_of(
        app.get(&format!("/orders/{order_id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read, replaced, "as stored");
}

#[tokio::test]
async fn the_sample_data_was_written_by_seed() {
    let app = spawn_app().await;
    seed::load(&app.pool).await.unwrap();

    for path in ["/orders?page_size=1000", "/services?page_size=1000"] {
        let page = json_of(app.get(path).await, StatusCode::OK).await;
        let records = page
            .as_object()
            .unwrap()
            .values()
            .find_map(Value::as_array)
            .unwrap();
        assert_eq!(records.len(), 3, "{page}");
        for record in records {
            assert_eq!(record["created_by"], "seed", "{record}");
            assert_eq!(record["updated_by"], "seed", "{record}");
        }
    }
}

#[tokio::test]
async fn a_body_that_names_who_wrote_it_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let service = app.create_service("Booked").await;
    let order = app
        .create_order("2031-01-01T10:00:00Z", 10.0, &[&service])
        .await;
    let viewed = app
        .client()
        .order_view()
        .id(&order.id)
        .send()
        .await
        .unwrap();
    let order_etag = etag(&viewed);
    let before = snapshot(&app).await;

    let with = |mut body: Value, field: &str| {
        body[field] = json!("mallory");
        body
    };
    let order_fields = order_body("2031-01-02T10:00:00Z", json!(10), &[&service]);
    let service_fields = json!({ "name": "Other" });
    for field in ["created_by", "updated_by"] {
        for (method, path, body) in [
            (
                Method::POST,
                "/orders".to_owned(),
                with(order_fields.clone(), field),
            ),
            (
                Method::PUT,
                format!("/orders/{}", order.id),
                with(order_fields.clone(), field),
            ),
            (
                Method::POST,
                "/services".to_owned(),
                with(service_fields.clone(), field),
            ),
            (
                Method::PUT,
                format!("/services/{service}"),
                with(service_fields.clone(), field),
            ),
        ] {
            let response = app
                .http
                .request(method.clone(), app.url(&path))
                .json(&body)
                .send()
                .await
                .unwrap();
            let problem = assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_BODY").await;
            assert!(
                problem["detail"].as_str().unwrap().contains(field),
                "{method} {path}: the detail names {field}: {problem}"
            );
        }
    }

    assert_eq!(snapshot(&app).await, before, "nothing changed");
    app.assert_order_unchanged(&order, &order_etag).await;
}
