//! Liveness, readiness, and what happens when the database is gone.

use orders_client::types;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    expect_problem, header, order_input, service_input, spawn_app, spawn_app_without_database,
};

#[tokio::test]
async fn healthz_is_ok_and_readyz_is_ok_with_the_pools_fill_with_a_database() {
    let app = spawn_app().await;

    let live = app.client().health_live().send().await.unwrap();
    let ready = app.client().health_ready().send().await.unwrap();

    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(
        live.into_inner(),
        types::HealthStatus {
            status: "ok".to_owned(),
            pool: None,
        }
    );
    assert_eq!(ready.status(), StatusCode::OK);
    let ready = ready.into_inner();
    assert_eq!(ready.status, "ok");
    let pool = ready.pool.expect("readiness reports the pool");
    assert_eq!(pool.max_size, 8);
    assert!(pool.size <= pool.max_size, "{pool:?}");
    assert!(pool.available <= pool.size, "{pool:?}");
    assert_eq!(pool.waiting, 0, "{pool:?}");
    // On the wire, that is all there is: probes compare the body as it is.
    let body: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(body, json!({ "status": "ok" }));
    let body: Value = app.get("/readyz").await.json().await.unwrap();
    let keys = |value: &Value| {
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&body), ["pool", "status"], "{body}");
    assert_eq!(
        keys(&body["pool"]),
        ["available", "max_size", "size", "waiting"],
        "{body}"
    );
}

#[tokio::test]
async fn without_a_database_healthz_is_ok_and_everything_else_is_503_with_retry_after() {
    let app = spawn_app_without_database().await;
    let client = app.client();

    let live = client.health_live().send().await.unwrap();
    assert_eq!(
        live.status(),
        StatusCode::OK,
        "liveness touches no database"
    );

    let outcomes = [
        client.health_ready().send().await.map(|_| ()),
        client.order_list().send().await.map(|_| ()),
        client.order_view().id("223").send().await.map(|_| ()),
        client
            .service_create()
            .body(service_input("Inspection"))
            .send()
            .await
            .map(|_| ()),
        client
            .order_create()
            .body(order_input("2022-11-01T11:11:11.111Z", 1.0, &["123"]))
            .send()
            .await
            .map(|_| ()),
    ];
    for outcome in outcomes {
        let problem = expect_problem(
            outcome,
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
        );
        assert_eq!(header(problem.headers(), "retry-after"), "5");
    }
}
