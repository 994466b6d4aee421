//! Overload: each API key's rate limit (429 `RATE_LIMITED`) and the cap on requests in flight
//! (503 `OVERLOADED`), both answered at once with `Retry-After`, and the probes outside the cap.

use std::{
    num::NonZeroU32,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use orders::{
    app::key_management,
    config::{RateSetting, Settings},
    domain::{KeyName, RateLimit, Scope},
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    TEST_KEY_NAME, TestApp, assert_problem, eventually, header, http_client_with_key, spawn_app,
    spawn_app_with,
};

fn limit(per_second: u32, burst: u32) -> RateLimit {
    RateLimit::new(NonZeroU32::new(per_second).unwrap(), NonZeroU32::new(burst))
}

/// `limit` as the instance's setting (`ORDERS_RATE_LIMIT` and `ORDERS_RATE_LIMIT_BURST`).
fn setting(limit: RateLimit) -> RateSetting {
    RateSetting {
        per_second: limit.per_second,
        burst: Some(limit.burst),
    }
}

/// Creates a key that may read, with its own limit (if any), as `orders keys create --rate`
/// does; waits until `app` accepts it and returns a client that sends it.
async fn key_with_rate(app: &TestApp, name: &str, rate: Option<RateLimit>) -> reqwest::Client {
    let name = KeyName::parse(name).unwrap();
    let secret = key_management::create_with_rate(&app.pool, &name, &[Scope::OrdersRead], rate)
        .await
        .unwrap();
    app.wait_for_key(&secret, true).await;
    http_client_with_key(&secret)
}

/// Sends `GET /services` with `client` until an answer is not a 200, and returns how many were
/// served before it, and that answer. Fails if `most` were served without one.
async fn served_until_refused(
    app: &TestApp,
    client: &reqwest::Client,
    most: usize,
) -> (usize, Response) {
    for served in 0..=most {
        let response = client.get(app.url("/services")).send().await.unwrap();
        if response.status() != StatusCode::OK {
            return (served, response);
        }
    }
    panic!("{most} requests were all served: no limit was applied");
}

/// Sends `count` requests one after another, and returns how many were served.
async fn served_of(app: &TestApp, client: &reqwest::Client, count: usize) -> usize {
    let mut served = 0;
    for _ in 0..count {
        let response = client.get(app.url("/services")).send().await.unwrap();
        match response.status() {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("neither served nor limited: {other}"),
        }
    }
    served
}

/// Asserts that `response` is the 429 of the key `key` over `limit`; returns its
/// `Retry-After`, in seconds.
async fn assert_rate_limited(response: Response, key: &str, limit: RateLimit) -> u64 {
    let retry_after = header(response.headers(), "retry-after");
    let problem = assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After in whole seconds, not {retry_after:?}"));
    // One token a second in these tests: the next is due within a second.
    assert_eq!(seconds, 1, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("the API key {key} may send {limit}"))
            && detail.contains("nothing was changed")
            && detail.contains("retry in 1 second"),
        "the detail names the key, its limit and the wait: {detail}"
    );
    seconds
}

#[tokio::test]
async fn a_key_past_its_own_burst_gets_429_with_retry_after_and_other_keys_are_served() {
    let app = spawn_app().await;
    let own = limit(1, 3);
    let limited = key_with_rate(&app, "limited", Some(own)).await;
    let neighbour = key_with_rate(&app, "neighbour", Some(own)).await;

    let started = Instant::now();
    let (served, refused) = served_until_refused(&app, &limited, 10).await;
    // The whole burst, and at most the tokens that came back while it was being sent.
    let regained = started.elapsed().as_secs() as usize + 1;
    assert!(
        (3..=3 + regained).contains(&served),
        "served {served} of a burst of 3"
    );
    let retry_after = assert_rate_limited(refused, "limited", own).await;

    // Buckets are per key: the same limit on another key still has its whole burst, and a
    // key with no limit of its own (none is configured for the instance) has none.
    assert_eq!(
        served_of(&app, &neighbour, 3).await,
        3,
        "the neighbour's burst"
    );
    assert_eq!(
        served_of(&app, &app.http, 20).await,
        20,
        "the unlimited key"
    );

    // After waiting as told, the key is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = limited.get(app.url("/services")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "served after Retry-After");
}

#[tokio::test]
async fn the_instance_s_limit_applies_to_keys_without_their_own_and_a_key_s_own_overrides_it() {
    let default = limit(1, 2);
    let app = spawn_app_with(|settings| settings.rate_limit = Some(setting(default))).await;
    let roomy = key_with_rate(&app, "roomy", Some(limit(1, 20))).await;

    let started = Instant::now();
    let (served, refused) = served_until_refused(&app, &app.http, 10).await;
    let regained = started.elapsed().as_secs() as usize + 1;
    assert!(
        (2..=2 + regained).contains(&served),
        "served {served} of the default burst of 2"
    );
    assert_rate_limited(refused, TEST_KEY_NAME, default).await;

    // Its own limit, larger than the instance's, is what holds for this key.
    assert_eq!(served_of(&app, &roomy, 10).await, 10, "the key's own burst");
}

#[tokio::test]
async fn a_reload_of_the_keys_keeps_each_bucket_and_a_changed_limit_takes_effect_at_the_next() {
    let app = spawn_app().await;
    let ring = app.keys.clone();
    let name = KeyName::parse("reloaded").unwrap();
    let secret =
        key_management::create_with_rate(&app.pool, &name, &[Scope::OrdersRead], Some(limit(1, 5)))
            .await
            .unwrap();
    app.wait_for_key(&secret, true).await;
    let client = http_client_with_key(&secret);

    let started = Instant::now();
    let (served, refused) = served_until_refused(&app, &client, 20).await;
    assert!(served >= 5, "served {served} of a burst of 5");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // The test app reloads its keys every 100 ms: let several reloads pass.
    let loads = ring.loads();
    eventually(
        "three reloads of the keys",
        Duration::from_secs(5),
        || async { ring.loads() >= loads + 3 },
    )
    .await;
    let served_again = served_of(&app, &client, 5).await;
    // A refilled bucket would serve all five; one that was kept, only the tokens regained.
    let regained = started.elapsed().as_secs() as usize + 1;
    assert!(
        served_again < 5 && served_again <= regained,
        "served {served_again} of 5 after reloads, {regained} tokens at most regained"
    );

    // A larger burst, written to the key's row: the next reload gives it a full new bucket.
    let changed = limit(1, 8);
    app.pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE api_keys SET rate_burst = 8 WHERE name = 'reloaded'",
            &[],
        )
        .await
        .unwrap();
    eventually("the new limit loaded", Duration::from_secs(5), || async {
        ring.authenticate(&secret).unwrap().rate_limit() == Some(changed)
    })
    .await;
    let started = Instant::now();
    let (served, refused) = served_until_refused(&app, &client, 30).await;
    let regained = started.elapsed().as_secs() as usize + 1;
    assert!(
        (8..=8 + regained).contains(&served),
        "served {served} of the new burst of 8"
    );
    assert_rate_limited(refused, "reloaded", changed).await;
}

#[tokio::test]
async fn without_a_configured_limit_no_key_is_limited() {
    let app = spawn_app().await;

    let statuses: Vec<StatusCode> = stream::iter(0..300)
        .map(|_| async { app.get("/services").await.status() })
        .buffer_unordered(8)
        .collect()
        .await;

    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "every request served: {:?}",
        statuses.iter().find(|status| **status != StatusCode::OK)
    );
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused_before_any_limit_and_take_no_token() {
    let app = spawn_app_with(|settings| settings.rate_limit = Some(setting(limit(1, 1)))).await;
    let unknown =
        http_client_with_key(&orders::app::authentication::IssuedSecret::generate().secret);

    for client in [&app.anonymous, &unknown, &app.anonymous, &unknown] {
        let response = client.get(app.url("/services")).send().await.unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    }

    // The test's own key still has its one token: the refused requests took none.
    assert_eq!(app.get("/services").await.status(), StatusCode::OK);
    let limited = app.get("/services").await;
    assert_rate_limited(limited, TEST_KEY_NAME, limit(1, 1)).await;
}

#[tokio::test]
async fn past_the_cap_on_requests_in_flight_a_request_waits_its_bound_then_gets_a_503_and_the_probes_are_served()
 {
    const QUEUE_WAIT: Duration = Duration::from_millis(300);
    let app = spawn_app_with(|settings| {
        settings.max_in_flight = 2;
        settings.max_queue_wait = QUEUE_WAIT;
    })
    .await;
    let service = app.create_service("Inspection").await;

    // Two creates held in flight: they wait on a lock the test holds.
    let lock = app.lock_table("orders").await;
    let held: Vec<_> = ["2023-06-01T10:00:00Z", "2023-06-02T10:00:00Z"]
        .into_iter()
        .map(|datetime| {
            let (http, url) = (app.http.clone(), app.url("/orders"));
            let body =
                json!({ "datetime": datetime, "totalfee": 1, "services": [{ "id": service }] });
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap() })
        })
        .collect();
    app.wait_for_lock_waiters("two held creates", 2, || {
        held.iter().all(|create| !create.is_finished())
    })
    .await;

    let started = Instant::now();
    let refused = app.get("/services").await;
    let answered_in = started.elapsed();
    let retry_after = header(refused.headers(), "retry-after");
    let problem = assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED").await;
    assert_eq!(retry_after, "1", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{problem}"
    );
    // After waiting its bound for a place, not until one was free (the held requests wait up
    // to the lock timeout).
    assert!(
        answered_in >= QUEUE_WAIT && answered_in < Settings::default().db_lock_timeout,
        "refused after its queue wait, not after {answered_in:?}"
    );
    // The probes are outside the cap: a load balancer still sees the instance as it is.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    assert!(
        held.iter().all(|create| !create.is_finished()),
        "the held requests were still in flight throughout"
    );

    // Released: the held creates are answered, and their places are free again.
    lock.release().await;
    for create in held {
        let create = create.await.unwrap();
        let status = create.status();
        if status != StatusCode::CREATED {
            // Only if the machine was too slow to release the lock before the lock timeout.
            assert_problem(create, StatusCode::SERVICE_UNAVAILABLE, "DATABASE_TIMEOUT").await;
        }
    }
    let served: Vec<StatusCode> = stream::iter(0..6)
        .map(|_| async { app.get("/services").await.status() })
        .buffer_unordered(2)
        .collect()
        .await;
    assert_eq!(served, [StatusCode::OK; 6], "every place is free again");
    let created = app
        .post_json(
            "/orders",
            &json!({ "datetime": "2023-07-01T10:00:00Z", "totalfee": 1, "services": [{ "id": service }] }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let _: Value = created.json().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_without_a_route_or_a_key_past_their_budget_are_answered_late_and_keyed_calls_at_once()
 {
    // Arrange: a budget of 10 such refusals a second.
    const BUDGET: u32 = 10;
    let app = spawn_app_with(|settings| settings.anonymous_refusals_per_second = BUDGET).await;

    // Act: three times the budget at once, half to a path no route has, half to an operation
    // without a key; and, meanwhile, a read with a key.
    let refusals: Vec<_> = (0..3 * BUDGET)
        .map(|index| {
            let (http, path) = if index % 2 == 0 {
                (app.anonymous.clone(), "/nowhere")
            } else {
                (app.anonymous.clone(), "/orders")
            };
            let url = app.url(path);
            tokio::spawn(async move {
                let sent = Instant::now();
                let status = http.get(url).send().await.unwrap().status();
                (status, sent.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    let keyed = app.get("/orders").await.status();
    let keyed_took = sent.elapsed();
    let mut answered = Vec::new();
    for refusal in refusals {
        answered.push(refusal.await.unwrap());
    }

    // Assert: the budget answered at once, the rest after the pace, and the keyed read at once.
    let late = answered
        .iter()
        .filter(|(_, took)| *took >= Duration::from_millis(900))
        .count();
    assert!(
        answered
            .iter()
            .all(|(status, _)| *status == StatusCode::NOT_FOUND
                || *status == StatusCode::UNAUTHORIZED),
        "{answered:?}"
    );
    assert!(
        (BUDGET as usize..=2 * BUDGET as usize).contains(&late),
        "{late} of {} answered late: {answered:?}",
        answered.len()
    );
    assert_eq!(keyed, StatusCode::OK);
    assert!(
        keyed_took < Duration::from_millis(500),
        "the keyed read took {keyed_took:?}"
    );
}
