//! `/metrics`: what Prometheus scrapes. Each test app has a registry of its own, so the
//! numbers a test reads are the requests it sent, whatever other tests run beside it.

use std::collections::BTreeMap;

use futures::{StreamExt, stream};
use orders::domain::Scope;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    TestApp, assert_problem, header, spawn_app, spawn_app_with, spawn_app_without_database,
};

/// One sample of the exposition: a series name, its labels, and its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text exposition (the format's comments left out). Label values here
/// never hold quotes or commas, so a plain split reads them.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("a label is key=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value
                    .parse()
                    .unwrap_or_else(|_| panic!("a number in {line}")),
            }
        })
        .collect()
}

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let response = app.anonymous.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    samples(&response.text().await.unwrap())
}

/// The value of the series `name` whose labels include all of `labels`; 0 when there is none
/// (a counter that never moved is not shown).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "one series for {name} {labels:?}: {matching:?}"
    );
    matching.first().map_or(0.0, |sample| sample.value)
}

/// How many requests the duration histogram counted with `method`, `route` and `status`.
fn served(samples: &[Sample], method: &str, route: &str, status: &str) -> f64 {
    value(
        samples,
        "http_server_request_duration_seconds_count",
        &[
            ("http_request_method", method),
            ("http_route", route),
            ("http_response_status_code", status),
        ],
    )
}

#[tokio::test]
async fn metrics_are_prometheus_text_that_needs_no_api_key() {
    let app = spawn_app().await;
    app.get("/healthz").await;

    let response = app.anonymous.get(app.url("/metrics")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(response.headers(), "content-type").starts_with("text/plain"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    for line in [
        "# TYPE http_server_request_duration_seconds histogram",
        "# TYPE http_server_active_requests gauge",
        "# TYPE db_pool_max_size gauge",
        "# HELP http_server_request_duration_seconds",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    let samples = samples(&text);
    assert_eq!(served(&samples, "GET", "/healthz", "200"), 1.0, "{text}");
    assert_eq!(value(&samples, "db_pool_max_size", &[]), 8.0);
    // The scrape itself is in flight while it renders.
    assert_eq!(value(&samples, "http_server_active_requests", &[]), 1.0);
    // Buckets from a millisecond to past the 5 s bound of a database wait.
    let bucket = |le| {
        value(
            &samples,
            "http_server_request_duration_seconds_bucket",
            &[("http_route", "/healthz"), ("le", le)],
        )
    };
    assert_eq!(bucket("+Inf"), 1.0);
    for le in ["0.001", "0.005", "0.1", "1", "5"] {
        assert!(
            samples
                .iter()
                .any(|sample| sample.labels.get("le").map(String::as_str) == Some(le)),
            "{le}"
        );
    }
}

#[tokio::test]
async fn with_an_address_of_their_own_the_metrics_are_served_there_and_the_api_port_has_none() {
    // Arrange: the metrics on a port of their own, and a request to the API to count.
    let app = spawn_app_with(|settings| {
        settings.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let own = app
        .metrics_address
        .clone()
        .expect("the metrics' own address");
    assert_ne!(own, app.address);
    assert_eq!(app.get("/services").await.status(), StatusCode::OK);

    // Act
    let on_the_api_port = app.anonymous.get(app.url("/metrics")).send().await.unwrap();
    let on_their_own = app
        .anonymous
        .get(format!("{own}/metrics"))
        .send()
        .await
        .unwrap();

    // Assert: the API's port answers as it does for a path it does not have.
    let problem = assert_problem(on_the_api_port, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_eq!(problem["detail"], "there is nothing at /metrics");
    // Their own port serves them, the API's traffic counted (the refused scrape too).
    assert_eq!(on_their_own.status(), StatusCode::OK);
    assert_eq!(
        header(on_their_own.headers(), "content-type"),
        "text/plain; version=0.0.4"
    );
    header(on_their_own.headers(), "x-request-id");
    let samples = samples(&on_their_own.text().await.unwrap());
    assert_eq!(served(&samples, "GET", "/services", "200"), 1.0);
    assert_eq!(served(&samples, "GET", "/metrics", "404"), 1.0);
    assert_eq!(served(&samples, "GET", "/metrics", "200"), 0.0);
    // And nothing else: not the API's operations, not other methods.
    let api_there = app
        .http
        .get(format!("{own}/services"))
        .send()
        .await
        .unwrap();
    assert_problem(api_there, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let posted = app
        .anonymous
        .post(format!("{own}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(posted.headers(), "allow"), "GET, HEAD");
    assert_problem(posted, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn requests_are_timed_under_their_route_template_and_events_are_counted() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    let read_only = app.create_key("reader", &[Scope::OrdersRead]).await;

    let read = app.get(&format!("/orders/{}", order.id)).await;
    let missing = app.get("/orders/999999").await;
    let clash = json!({
        "datetime": "2023-05-01T11:00:00Z",
        "totalfee": 1,
        "services": [{ "id": service }],
    });
    let conflict = app.post_json("/orders", &clash).await;
    let elsewhere = json!({
        "datetime": "2023-09-01T10:00:00Z",
        "totalfee": 1,
        "services": [{ "id": service }],
    });
    let mut replays = Vec::new();
    for _ in 0..3 {
        let response = app
            .http
            .post(app.url("/orders"))
            .header("idempotency-key", "metrics-1")
            .json(&elsewhere)
            .send()
            .await
            .unwrap();
        replays.push(response.status());
    }
    let unauthenticated = [
        app.anonymous.get(app.url("/orders")).send().await.unwrap(),
        app.anonymous
            .get(app.url("/orders"))
            .header("authorization", "Basic b3JkOng=")
            .send()
            .await
            .unwrap(),
        app.anonymous
            .get(app.url("/orders"))
            .bearer_auth("ord_nosuchkey_0000")
            .send()
            .await
            .unwrap(),
    ];
    let forbidden = app
        .anonymous
        .post(app.url("/orders"))
        .bearer_auth(&read_only)
        .json(&elsewhere)
        .send()
        .await
        .unwrap();

    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(replays, [StatusCode::CREATED; 3]);
    for response in &unauthenticated {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let samples = scrape(&app).await;
    assert_eq!(served(&samples, "POST", "/services", "201"), 1.0);
    // The first create, and the idempotent one with its two replays.
    assert_eq!(served(&samples, "POST", "/orders", "201"), 4.0);
    assert_eq!(served(&samples, "GET", "/orders/{id}", "200"), 1.0);
    assert_eq!(served(&samples, "GET", "/orders/{id}", "404"), 1.0);
    assert_eq!(served(&samples, "POST", "/orders", "409"), 1.0);
    assert_eq!(served(&samples, "GET", "/orders", "401"), 3.0);
    assert_eq!(served(&samples, "POST", "/orders", "403"), 1.0);
    // Never a raw path: no id appears in any label.
    for sample in &samples {
        for label in sample.labels.values() {
            assert!(
                !label.contains(&order.id) && !label.contains("999999"),
                "{sample:?}"
            );
        }
    }
    assert_eq!(value(&samples, "orders_time_conflicts_total", &[]), 1.0);
    assert_eq!(value(&samples, "idempotent_replays_total", &[]), 2.0);
    for reason in ["missing", "malformed", "unknown", "forbidden"] {
        assert_eq!(
            value(&samples, "auth_failures_total", &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        value(&samples, "db_errors_total", &[("kind", "unavailable")]),
        0.0
    );
}

/// The number of distinct series in a scrape.
fn series_count(samples: &[Sample]) -> usize {
    samples
        .iter()
        .map(|sample| (&sample.name, &sample.labels))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[tokio::test]
async fn unknown_paths_and_invented_methods_add_no_series() {
    let app = spawn_app().await;
    let brew = Method::from_bytes(b"BREW").unwrap();
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    // Request `n` of the kinds below: an unknown path, a path under a known one, an invented
    // method on an unknown path and on a known one.
    let request = |n: usize| {
        let (method, path) = match n % 4 {
            0 => (Method::GET, format!("/no-such-thing/{n}")),
            1 => (Method::GET, format!("/orders/{n}/and/more")),
            2 => (brew.clone(), format!("/teapot-{n}")),
            _ => (propfind.clone(), "/orders".to_owned()),
        };
        app.anonymous.request(method, app.url(&path)).send()
    };
    // Each kind once, so that the series they make exist before counting.
    for n in 0..4 {
        request(n).await.unwrap();
    }
    // A scrape is counted once it is answered: the first makes the series of the next.
    scrape(&app).await;
    let before = scrape(&app).await;

    let statuses: Vec<StatusCode> = stream::iter(4..1004)
        .map(|n| async move { request(n).await.unwrap().status() })
        .buffer_unordered(16)
        .collect()
        .await;

    assert!(
        statuses.iter().all(|status| status.is_client_error()),
        "{statuses:?}"
    );
    let after = scrape(&app).await;
    let names = |samples: &[Sample]| -> Vec<String> {
        samples
            .iter()
            .map(|sample| format!("{} {:?}", sample.name, sample.labels))
            .collect()
    };
    assert_eq!(
        series_count(&after),
        series_count(&before),
        "before: {:#?}\nafter: {:#?}",
        names(&before),
        names(&after)
    );
    let unmatched: f64 = after
        .iter()
        .filter(|sample| {
            sample.name == "http_server_request_duration_seconds_count"
                && sample.labels["http_route"] == "unmatched"
        })
        .map(|sample| sample.value)
        .sum();
    // Three kinds of four have no route; each was counted, the first four requests too.
    assert_eq!(unmatched, 753.0);
    assert_eq!(
        value(
            &after,
            "http_server_request_duration_seconds_count",
            &[("http_request_method", "_OTHER"), ("http_route", "/orders")]
        ),
        251.0
    );
}

#[tokio::test]
async fn an_unreachable_database_is_counted_as_unavailable() {
    let app = spawn_app_without_database().await;

    let ready = app.get("/readyz").await;

    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let samples = scrape(&app).await;
    assert!(
        value(&samples, "db_errors_total", &[("kind", "unavailable")]) >= 1.0,
        "{samples:?}"
    );
    assert_eq!(value(&samples, "db_pool_size", &[]), 0.0);
}

#[tokio::test]
async fn requests_waiting_on_a_lock_are_in_flight_and_a_lock_timeout_is_counted() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    let lock = app.lock_table("orders").await;

    let path = format!("/orders/{}", order.id);
    let read = tokio::spawn({
        let http = app.http.clone();
        let url = app.url(&path);
        async move { http.get(url).send().await.unwrap().status() }
    });
    app.wait_for_a_lock_waiter("the read", || !read.is_finished())
        .await;
    let during = scrape(&app).await;
    let status = read.await.unwrap();
    lock.release().await;
    let after = scrape(&app).await;

    // The held read and the scrape itself.
    assert_eq!(value(&during, "http_server_active_requests", &[]), 2.0);
    assert!(value(&during, "db_pool_size", &[]) >= 1.0, "{during:?}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(value(&after, "http_server_active_requests", &[]), 1.0);
    assert_eq!(
        value(&after, "db_errors_total", &[("kind", "timed_out")]),
        1.0
    );
    assert_eq!(served(&after, "GET", "/orders/{id}", "503"), 1.0);
}

#[tokio::test]
async fn the_pool_gauges_show_connections_in_use_and_requests_waiting_for_one() {
    // A pool of 2 and lock waits longer than the test: three creates behind a table lock hold
    // both connections, and the third waits for one.
    // No key reloads while it runs: they would take a pooled connection of their own.
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.db_pool_size = 2;
        settings.db_statement_timeout = std::time::Duration::from_secs(30);
        settings.db_lock_timeout = std::time::Duration::from_secs(30);
        settings.key_refresh_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let service = app.create_service("Inspection").await;
    let lock = app.lock_table("orders").await;

    let creates: Vec<_> = (0..3)
        .map(|slot| {
            let http = app.http.clone();
            let url = app.url("/orders");
            let body = crate::helpers::order_body(
                &format!("2031-01-0{}T10:00:00Z", slot + 1),
                json!(1),
                &[&service],
            );
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap().status() })
        })
        .collect();
    app.wait_for_lock_waiters("two creates", 2, || {
        creates.iter().all(|create| !create.is_finished())
    })
    .await;
    // The third is waiting for a connection once the pool says so.
    crate::helpers::eventually(
        "the third create waits for a connection",
        std::time::Duration::from_secs(5),
        async || value(&scrape(&app).await, "db_pool_waiting", &[]) >= 1.0,
    )
    .await;
    let during = scrape(&app).await;
    lock.release().await;
    for create in creates {
        assert_eq!(create.await.unwrap(), StatusCode::CREATED);
    }
    let after = scrape(&app).await;

    assert_eq!(value(&during, "db_pool_max_size", &[]), 2.0, "{during:?}");
    assert_eq!(value(&during, "db_pool_size", &[]), 2.0, "{during:?}");
    assert_eq!(value(&during, "db_pool_available", &[]), 0.0, "{during:?}");
    assert_eq!(value(&during, "db_pool_waiting", &[]), 1.0, "{during:?}");
    assert_eq!(value(&after, "db_pool_available", &[]), 2.0, "{after:?}");
    assert_eq!(value(&after, "db_pool_waiting", &[]), 0.0, "{after:?}");
}
