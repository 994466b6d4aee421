//! Reads over the connections they share (see `orders::storage::shared`): many reads at once
//! take no pooled connections, a locked table costs its reads the lock timeout and no read of
//! another table anything, and a shared connection that breaks is replaced without a read
//! failing.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Waits until the app's shared connections are all open; fails after 10 s.
async fn until_shared_connections_open(app: &TestApp) {
    let started = Instant::now();
    loop {
        let configured = app.gauge("db_shared_connections").await;
        if configured > 0.0 && app.gauge("db_shared_connections_open").await == configured {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the shared connections did not open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_hundred_reads_at_once_are_served_without_taking_pooled_connections() {
    // Arrange: no key reloads, which would take a pooled connection of their own.
    let app =
        spawn_app_with(|settings| settings.key_refresh_interval = Duration::from_secs(3600)).await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    until_shared_connections_open(&app).await;
    let pooled_before = app.gauge("db_pool_size").await;

    // Act
    let paths = [
        format!("/orders/{}", order.id),
        format!("/services/{service}"),
        "/orders".to_owned(),
        "/events".to_owned(),
        "/free-slots?from=2023-05-01T00:00:00Z&to=2023-05-02T00:00:00Z".to_owned(),
    ];
    let answers = join_all((0..200).map(|n| app.get(&paths[n % paths.len()]))).await;

    // Assert: every read answered, and the pool opened no connection for them.
    for answer in answers {
        assert_eq!(answer.status(), StatusCode::OK);
    }
    assert_eq!(app.gauge("db_pool_size").await, pooled_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_connection_that_breaks_is_replaced_and_no_read_fails() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    until_shared_connections_open(&app).await;

    // Readers reading all along, so that some reads are on the connections when they end.
    let path = format!("/orders/{}", order.id);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, stop) = (app.http.clone(), app.url(&path), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(http.get(&url).send().await.unwrap().status());
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // What a failover or an administrator's pg_terminate_backend does to them.
    let terminated: i64 = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'orders-shared'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<StatusCode> = join_all(readers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();

    assert_eq!(
        terminated,
        orders::config::DEFAULT_SHARED_CONNECTIONS as i64
    );
    assert!(statuses.len() > 20, "{} reads", statuses.len());
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "every read is answered: {statuses:?}"
    );
    until_shared_connections_open(&app).await;
}

#[tokio::test]
async fn with_no_shared_connections_every_read_takes_a_pooled_one() {
    let app = crate::helpers::spawn_app_with(|settings| settings.db_shared_connections = 0).await;
    let service = app.create_service("Inspection").await;

    let path = format!("/services/{service}");
    let answers = join_all((0..20).map(|_| app.get(&path))).await;

    for answer in answers {
        assert_eq!(answer.status(), StatusCode::OK);
    }
    assert_eq!(app.gauge("db_shared_connections").await, 0.0);
    assert!(app.gauge("db_pool_size").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_costs_each_of_its_reads_the_lock_timeout_and_no_other_read_anything() {
    // Arrange: a lock timeout long enough to tell waiting it out once from waiting it out in
    // turn, and a pool of 8, half of which reads of a locked table may wait on.
    const LOCK_TIMEOUT: Duration = Duration::from_secs(1);
    const POOL: usize = 8;
    let app = spawn_app_with(|settings| {
        settings.db_lock_timeout = LOCK_TIMEOUT;
        settings.db_pool_size = POOL;
    })
    .await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    until_shared_connections_open(&app).await;
    let lock = app.lock_table("orders").await;

    // Act: a dozen reads of the locked table at once, each timed...
    let order_path = format!("/orders/{}", order.id);
    let reads: Vec<_> = (0..12)
        .map(|_| {
            let (http, url) = (app.http.clone(), app.url(&order_path));
            tokio::spawn(async move {
                let sent = Instant::now();
                let status = http.get(url).send().await.unwrap().status();
                (status, sent.elapsed())
            })
        })
        .collect();
    app.wait_for_lock_waiters("the reads of orders", POOL as i64 / 2, || {
        reads.iter().any(|read| !read.is_finished())
    })
    .await;
    // ... and, while they wait, a write and reads of another table, of the feed and of
    // readiness.
    let sent = Instant::now();
    let created = app
        .http
        .post(app.url("/services"))
        .json(&serde_json::json!({"name": "Made while orders are locked"}))
        .send()
        .await
        .unwrap()
        .status();
    let mut others = vec![("POST /services".to_owned(), created, sent.elapsed())];
    for path in [
        format!("/services/{service}"),
        "/services".to_owned(),
        "/events?limit=10".to_owned(),
        "/readyz".to_owned(),
    ] {
        let sent = Instant::now();
        let status = app.get(&path).await.status();
        others.push((path, status, sent.elapsed()));
    }
    let mut answered = Vec::new();
    for read in reads {
        answered.push(read.await.unwrap());
    }
    lock.release().await;

    // Assert: each read of orders waited out the lock timeout once, in parallel with the
    // others, not in turn behind them (or, past half the pool, was answered at once)...
    for (status, took) in &answered {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            *took < LOCK_TIMEOUT + Duration::from_millis(700),
            "a read of the locked table took {took:?}: {answered:?}"
        );
    }
    // ... and the other reads were answered at once (the figure is a few milliseconds; the
    // bound only needs to tell it from a lock wait).
    for (path, status, took) in &others {
        assert!(status.is_success(), "{path}: {status}");
        assert!(
            *took < LOCK_TIMEOUT / 2,
            "{path} took {took:?} while the table was locked"
        );
    }
    // Once the lock is gone, everything answers.
    assert_eq!(app.get(&order_path).await.status(), StatusCode::OK);
}
