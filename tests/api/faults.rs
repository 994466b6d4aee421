//! Faults of the database, made by the tests themselves: every wait is bounded and answered.

use std::time::{Duration, Instant};

use orders::storage::SessionLimits;
use reqwest::StatusCode;

use crate::helpers::{assert_problem, spawn_app};

/// As long as a request may wait on a lock before it is answered: the lock timeout, and time
/// for the answer on a busy machine.
fn answer_bound() -> Duration {
    SessionLimits::default().lock_timeout + Duration::from_secs(2)
}

#[tokio::test]
async fn a_table_locked_past_the_bound_is_a_prompt_503_and_everything_else_is_served() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;

    // What a migration or a VACUUM FULL holds: no read or write of orders gets past it.
    let mut holder = app.pool.get().await.unwrap();
    let lock = holder.transaction().await.unwrap();
    lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", &[])
        .await
        .unwrap();

    let body = serde_json::json!({
        "datetime": "2023-06-01T10:00:00Z",
        "totalfee": 1,
        "services": [{ "id": service }],
    });
    let (order_path, service_path) = (
        format!("/orders/{}", order.id),
        format!("/services/{service}"),
    );
    let started = Instant::now();
    let (create, read, service_read, ready, live) = tokio::join!(
        app.post_json("/orders", &body),
        app.get(&order_path),
        app.get(&service_path),
        app.get("/readyz"),
        app.get("/healthz"),
    );
    let waited = started.elapsed();

    // Not starved: what does not touch orders is answered as usual.
    assert_eq!(service_read.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(live.status(), StatusCode::OK);
    for response in [create, read] {
        let problem = assert_problem(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_TIMEOUT",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was changed"),
            "{problem}"
        );
    }
    assert!(
        waited < answer_bound(),
        "answered within the bound, not after {waited:?}"
    );

    // Released: everything works again at once, and the refused create left nothing.
    lock.rollback().await.unwrap();
    assert_eq!(
        app.all_orders().await.len(),
        1,
        "the refused create wrote nothing"
    );
    let created = app.post_json("/orders", &body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(app.get(&order_path).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_503_for_a_timeout_says_when_to_retry() {
    let app = spawn_app().await;
    let mut holder = app.pool.get().await.unwrap();
    let lock = holder.transaction().await.unwrap();
    lock.execute("LOCK TABLE services IN ACCESS EXCLUSIVE MODE", &[])
        .await
        .unwrap();

    let refused = app.get("/services").await;

    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        retry_after.parse::<u32>().is_ok_and(|seconds| seconds > 0),
        "{retry_after}"
    );
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "DATABASE_TIMEOUT").await;
    lock.rollback().await.unwrap();
}
