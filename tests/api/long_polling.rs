//! Reading the change feed with `wait`: held until an event arrives or the time is up, woken
//! promptly, and cheap to hold by the thousand.

use std::time::{Duration, Instant};

use futures::future::join_all;
use orders::domain::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    events::{feed_page, head},
    helpers::{
        TestApp, assert_problem, eventually, http_client_with_key, spawn_app, spawn_app_with,
    },
};

/// GETs `/events?after={after}&wait={wait}`: its status, body and how long it took.
async fn wait_for_events(app: &TestApp, after: &str, wait: u32) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let response = app.get(&format!("/events?after={after}&wait={wait}")).await;
    let status = response.status();
    let body = response.json().await.unwrap();
    (status, body, started.elapsed())
}

/// The types and subject ids of a page's events.
fn kinds_and_subjects(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap().to_owned(),
                event["subject"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_wait_with_nothing_to_give_ends_when_its_time_is_up_with_the_same_cursor() {
    let app = spawn_app().await;
    let cursor = head(&app).await;

    let (status, page, took) = wait_for_events(&app, &cursor, 1).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({ "events": [], "next_cursor": cursor }));
    assert!(took >= Duration::from_secs(1), "answered after {took:?}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

#[tokio::test]
async fn a_wait_with_events_to_give_answers_at_once() {
    let app = spawn_app().await;
    let cursor = head(&app).await;
    let service = app.create_service("Inspection").await;
    // Once the event can be read at all (the feed holds it back while any older transaction
    // of the cluster runs), a wait does not hold it.
    let (events, _) = crate::events::read_events(&app, Some(&cursor), 1, 10).await;
    assert_eq!(events.len(), 1);

    let (status, page, took) = wait_for_events(&app, &cursor, 30).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        kinds_and_subjects(&page),
        [("service.created".to_owned(), service)]
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

#[tokio::test]
async fn a_waiting_reader_gets_a_new_event_within_100_ms_of_its_commit() {
    let app = spawn_app().await;
    let mut latencies = Vec::new();
    for round in 0..5 {
        let cursor = head(&app).await;
        let waiting = tokio::spawn({
            let (http, url) = (
                app.http.clone(),
                app.url(&format!("/events?after={cursor}&wait=20")),
            );
            async move {
                let response = http.get(url).send().await.unwrap();
                let answered = Instant::now();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap(), answered)
            }
        });
        // The reader's first read is over and it waits: only an event can answer it now.
        eventually("the reader waits", Duration::from_secs(5), || async {
            waiting_readers(&app).await == 1.0
        })
        .await;

        let service = app.create_service(&format!("Wash {round}")).await;
        let committed = Instant::now();

        let (status, page, answered) = waiting.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            kinds_and_subjects(&page),
            [("service.created".to_owned(), service)]
        );
        latencies.push(answered.saturating_duration_since(committed));
    }
    latencies.sort();
    println!("from a create's answer to the waiting reader's: {latencies:?}");
    // The median, so one round slowed by the shared machine does not decide; without the
    // wake-up, each would take the whole wait (20 s).
    assert!(
        latencies[2] < Duration::from_millis(100),
        "woken after {latencies:?}"
    );
}

#[tokio::test]
async fn waits_outside_zero_to_thirty_seconds_are_refused() {
    let app = spawn_app().await;
    for wait in ["31", "-1", "1.5", "x", "", "300"] {
        let response = app.get(&format!("/events?after=now&wait={wait}")).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
        assert!(
            problem["detail"].as_str().unwrap().starts_with("wait: "),
            "{wait:?}: {problem}"
        );
    }
    let response = app.get("/events?after=now&wait=0").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_waiting_readers_hold_no_connections_and_all_get_the_next_event() {
    // Arrange: an instance with two connections and the default cap of 256 requests at once,
    // that lets a thousand readers of one key wait.
    const READERS: usize = 1000;
    let app = spawn_app_with(|settings| {
        settings.db_pool_size = 2;
        settings.feed_max_waiting_per_key = READERS;
    })
    .await;
    let cursor = head(&app).await;
    // HTTP/1.1: each request waiting at once is on a connection of its own, as separate
    // consumers' would be. They arrive a hundred at a time, as consumers come and go: a
    // thousand arriving in the same instant would find the cap of 256 requests at once taken by
    // those still at their first read.
    let mut readers = Vec::new();
    for batch in 1..=READERS / 100 {
        readers.extend((0..100).map(|_| {
            let client = app.http.clone();
            let url = app.url(&format!("/events?after={cursor}&wait=30"));
            tokio::spawn(async move {
                let response = client.get(url).send().await.unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            })
        }));
        wait_until_readers_wait(&app, batch * 100).await;
    }
    let sessions = wait_until_readers_wait(&app, READERS).await;

    // The instance's sessions: its pool, its watcher's and those its reads share.
    assert!(
        sessions <= 2 + 1 + orders::config::DEFAULT_SHARED_CONNECTIONS as i64,
        "{sessions} sessions of the service while {READERS} readers wait"
    );
    let service = app.create_service("Inspection").await;
    let committed = Instant::now();
    let answers = join_all(readers).await;
    println!(
        "{READERS} waiting readers all answered {:?} after the create's answer",
        committed.elapsed()
    );
    for answer in answers {
        let (status, page) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            kinds_and_subjects(&page),
            [("service.created".to_owned(), service.clone())]
        );
    }
    assert_eq!(
        feed_page(&app, None, 10).await["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn waiting_readers_leave_their_places_under_the_cap_to_other_requests() {
    // Arrange: room for 2 requests at once, and 10 readers waiting.
    let app = spawn_app_with(|settings| {
        settings.db_pool_size = 2;
        settings.max_in_flight = 2;
    })
    .await;
    let cursor = head(&app).await;
    let mut readers = Vec::new();
    for waiting in 1..=10 {
        let (client, url) = (
            app.http.clone(),
            app.url(&format!("/events?after={cursor}&wait=30")),
        );
        readers.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status()
        }));
        wait_until_readers_wait(&app, waiting).await;
    }

    // Act and assert: other requests are served, and a write's event ends every wait.
    assert_eq!(app.get("/services").await.status(), StatusCode::OK);
    app.create_service("Inspection").await;
    for reader in readers {
        assert_eq!(reader.await.unwrap(), StatusCode::OK);
    }
}

/// Waits until `readers` feed reads are waiting, as the instance's metrics count them, and
/// the service's sessions are idle; returns how many sessions it then holds.
async fn wait_until_readers_wait(app: &TestApp, readers: usize) -> i64 {
    let client = app.pool.get().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = waiting_readers(app).await;
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE state = 'active')
                 FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'orders'",
                &[],
            )
            .await
            .unwrap();
        let (sessions, active): (i64, i64) = (row.get(0), row.get(1));
        if waiting >= readers as f64 && active == 0 {
            return sessions;
        }
        assert!(
            Instant::now() < deadline,
            "only {waiting} of {readers} readers are waiting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The instance's gauge of feed reads waiting now.
async fn waiting_readers(app: &TestApp) -> f64 {
    app.gauge("orders_feed_waiting_readers").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_waiting_readers_when_the_listener_closes_and_the_drain_ends() {
    // Arrange: an app of the test's own, to shut it down, with a reader waiting 30 s.
    // Readiness says 503 for a second before the listener closes.
    let delay = Duration::from_secs(1);
    let mut app = spawn_app_with(|settings| settings.connections.shutdown_delay = delay).await;
    let url = app.url("/events?after=now&wait=30");
    let secret = app.secret.clone();
    let waiting = tokio::spawn(async move {
        let response = http_client_with_key(&secret).get(url).send().await.unwrap();
        let status = response.status();
        (
            status,
            response.json::<Value>().await.unwrap(),
            Instant::now(),
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act
    let stopping = Instant::now();
    let running = app.shut_down();
    let (status, page, answered) = waiting.await.unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(10), running).await;

    // Assert: an ordinary empty answer once the listener has closed (not while the instance
    // still takes requests, which would only bring the reader back at once), long before the
    // wait's end; and the drain is over.
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["events"], json!([]));
    let took = answered.saturating_duration_since(stopping);
    assert!(
        (delay..delay + Duration::from_secs(2)).contains(&took),
        "answered {took:?} after the shutdown began"
    );
    assert!(drained.is_ok(), "the drain did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_waiting_readers_with_as_many_limits_share_one_read_of_the_next_event() {
    // Arrange: a thousand readers of one key at the head, each with a limit of its own.
    const READERS: usize = 1000;
    let app = spawn_app_with(|settings| {
        settings.db_pool_size = 2;
        settings.feed_max_waiting_per_key = READERS;
    })
    .await;
    let cursor = head(&app).await;
    let mut readers = Vec::new();
    for batch in 0..READERS / 100 {
        readers.extend((1..=100).map(|reader| {
            let limit = batch * 100 + reader;
            let client = app.http.clone();
            let url = app.url(&format!("/events?after={cursor}&wait=30&limit={limit}"));
            tokio::spawn(async move {
                let response = client.get(url).send().await.unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            })
        }));
        wait_until_readers_wait(&app, (batch + 1) * 100).await;
    }
    let reads = woken_reads(&app).await;

    // Act
    let service = app.create_service("Inspection").await;
    let committed = Instant::now();
    let answers = join_all(readers).await;
    let answered = committed.elapsed();

    // Assert: each got the event, and the database was asked once for all of them.
    println!(
        "{READERS} waiting readers with as many limits all answered {answered:?} after the create's answer"
    );
    for answer in answers {
        let (status, page) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            kinds_and_subjects(&page),
            [("service.created".to_owned(), service.clone())]
        );
    }
    // One read, as a rule; a read is shared by the readers that one head woke, so a head
    // seen to move again before every reader has taken its page is read once more for those it
    // wakes (seen once in many runs on a loaded machine). Never one per reader or per limit.
    let shared = woken_reads(&app).await - reads;
    assert!(
        (1.0..=3.0).contains(&shared),
        "{shared} reads for {READERS} readers"
    );
}

/// How many reads of the feed the instance has made for readers woken from a wait.
async fn woken_reads(app: &TestApp) -> f64 {
    app.gauge("orders_feed_reads_total{kind=\"woken\"}").await
}

/// Starts a reader waiting up to 30 s at `cursor` with `client`, on a connection of its own
/// when the client has no idle one; resolves to its answer's status, body and when it came.
fn waiting_reader(
    app: &TestApp,
    client: &reqwest::Client,
    cursor: &str,
    limit: usize,
) -> tokio::task::JoinHandle<(StatusCode, Value, Instant)> {
    let (client, url) = (
        client.clone(),
        app.url(&format!("/events?after={cursor}&wait=30&limit={limit}")),
    );
    tokio::spawn(async move {
        let response = client.get(url).send().await.unwrap();
        let status = response.status();
        let body = response.json::<Value>().await.unwrap();
        (status, body, Instant::now())
    })
}

/// How many waits the instance has cut short for `reason`.
async fn waits_cut_short(app: &TestApp, reason: &str) -> f64 {
    app.gauge(&format!(
        "orders_feed_waits_cut_short_total{{reason=\"{reason}\"}}"
    ))
    .await
}

#[tokio::test]
async fn past_its_key_s_bound_a_reader_is_answered_at_once_while_another_key_s_reader_waits() {
    // Arrange: two readers of one key may wait, and the instance holds more.
    let app = spawn_app_with(|settings| {
        settings.feed_max_waiting_per_key = 2;
        settings.feed_max_waiting = 10;
    })
    .await;
    let other_key = http_client_with_key(&app.create_key("another", &[Scope::OrdersRead]).await);
    let cursor = head(&app).await;
    let first = waiting_reader(&app, &app.http, &cursor, 100);
    let second = waiting_reader(&app, &app.http, &cursor, 100);
    let other = waiting_reader(&app, &other_key, &cursor, 100);
    wait_until_readers_wait(&app, 3).await;

    // Act: a third reader of the first key.
    let (status, page, took) = wait_for_events(&app, &cursor, 30).await;

    // Assert: answered at once, as a wait of 0 is, and counted; the others still wait.
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({ "events": [], "next_cursor": cursor }));
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(waits_cut_short(&app, "per_key").await, 1.0);
    assert_eq!(waiting_readers(&app).await, 3.0);
    assert!(!other.is_finished() && !first.is_finished() && !second.is_finished());
    // And the next event reaches every reader still waiting.
    let service = app.create_service("Inspection").await;
    for reader in [first, second, other] {
        let (status, page, _) = reader.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            kinds_and_subjects(&page),
            [("service.created".to_owned(), service.clone())]
        );
    }
}

#[tokio::test]
async fn past_the_instance_s_bound_a_reader_of_any_key_is_answered_at_once() {
    // Arrange: two readers may wait on the instance, of any keys.
    let app = spawn_app_with(|settings| settings.feed_max_waiting = 2).await;
    let cursor = head(&app).await;
    let mut readers = Vec::new();
    for name in ["first", "second"] {
        let client = http_client_with_key(&app.create_key(name, &[Scope::OrdersRead]).await);
        readers.push(waiting_reader(&app, &client, &cursor, 100));
    }
    wait_until_readers_wait(&app, 2).await;

    // Act: a reader of a third key.
    let (status, page, took) = wait_for_events(&app, &cursor, 30).await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({ "events": [], "next_cursor": cursor }));
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(waits_cut_short(&app, "per_instance").await, 1.0);
    assert_eq!(waiting_readers(&app).await, 2.0);
    app.create_service("Inspection").await;
    for reader in readers {
        let (status, page, _) = reader.await.unwrap();
        assert_eq!(
            (status, page["events"].as_array().unwrap().len()),
            (StatusCode::OK, 1)
        );
    }
}

#[tokio::test]
async fn readers_woken_together_with_different_limits_each_get_the_front_of_one_read() {
    // Arrange: three services, and readers after their events with limits 1, 2 and 5.
    let app = spawn_app().await;
    let mut services = Vec::new();
    for name in ["Wash", "Wax", "Polish"] {
        services.push(app.create_service(name).await);
    }
    let (_, cursor) = crate::events::read_events(&app, None, 3, 10).await;
    let readers: Vec<_> = [1, 2, 5]
        .into_iter()
        .map(|limit| {
            (
                limit,
                waiting_reader(&app, &reqwest_client(&app), &cursor, limit),
            )
        })
        .collect();
    wait_until_readers_wait(&app, 3).await;
    let reads = woken_reads(&app).await;

    // Act: three events that become readable at once, as those of one transaction do: the
    // services' events written again, by the test, in one.
    app.pool
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO events (type, actor, subject_id, data)
             SELECT type, actor, subject_id, data FROM events ORDER BY tx, id",
            &[],
        )
        .await
        .unwrap();

    // Assert: each reader gets as many of them as it asked for, and its cursor after the
    // last; one read served all three.
    for (limit, reader) in readers {
        let (status, page, _) = reader.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        let expected: Vec<_> = services
            .iter()
            .take(limit)
            .map(|id| ("service.created".to_owned(), id.clone()))
            .collect();
        assert_eq!(kinds_and_subjects(&page), expected, "limit {limit}");
        let events = page["events"].as_array().unwrap();
        assert_eq!(
            page["next_cursor"],
            events.last().unwrap()["id"],
            "limit {limit}"
        );
    }
    assert_eq!(woken_reads(&app).await - reads, 1.0);
}

/// A client of the test's key with connections of its own.
fn reqwest_client(app: &TestApp) -> reqwest::Client {
    http_client_with_key(&app.secret)
}

#[tokio::test]
async fn at_the_connection_cap_the_reader_waiting_longest_is_answered_early_to_let_a_newcomer_in() {
    // Arrange: room for three connections, each held by a reader waiting 30 s, the oldest
    // first; the metrics are on a port of their own, so that reading them takes no room.
    let app = spawn_app_with(|settings| {
        settings.connections.max_connections = Some(3);
        settings.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let cursor = head(&app).await;
    let mut readers = Vec::new();
    for waiting in 1..=3 {
        readers.push(waiting_reader(&app, &reqwest_client(&app), &cursor, 100));
        wait_until_readers_wait(&app, waiting).await;
    }

    // Act: a newcomer.
    let asked = Instant::now();
    let newcomer = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest_client(&app).get(app.url("/services")).send(),
    )
    .await;

    // Assert: it is served at once; the oldest reader was answered just before it, with no
    // events and its cursor (a correct answer), and the others still wait.
    let served = asked.elapsed();
    let newcomer = newcomer
        .unwrap_or_else(|_| panic!("no answer after {served:?}"))
        .unwrap();
    assert_eq!(newcomer.status(), StatusCode::OK);
    assert!(served < Duration::from_secs(2), "served after {served:?}");
    let mut readers = readers.into_iter();
    let (status, page, answered) = readers.next().unwrap().await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({ "events": [], "next_cursor": cursor }));
    assert!(answered.saturating_duration_since(asked) < Duration::from_secs(2));
    assert_eq!(waits_cut_short(&app, "connection_cap").await, 1.0);
    assert_eq!(waiting_readers(&app).await, 2.0);
    let service = app.create_service("Inspection").await;
    for reader in readers {
        let (status, page, _) = reader.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            kinds_and_subjects(&page),
            [("service.created".to_owned(), service.clone())]
        );
    }
}
