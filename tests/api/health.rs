//! Liveness, readiness, and what happens when the database is gone.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, order_body, spawn_app, spawn_app_without_database};

#[tokio::test]
async fn healthz_and_readyz_are_ok_with_a_database() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "status": "ok" })
        );
    }
}

#[tokio::test]
async fn without_a_database_healthz_is_ok_and_everything_else_is_503_with_retry_after() {
    let app = spawn_app_without_database().await;

    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "liveness touches no database"
    );
    let requests = [
        app.get("/readyz").await,
        app.get("/orders").await,
        app.get("/orders/223").await,
        app.post_json("/services", &json!({ "name": "Inspection" }))
            .await,
        app.post_json(
            "/orders",
            &order_body("2022-11-01T11:11:11.111Z", json!(1), &["123"]),
        )
        .await,
    ];
    for response in requests {
        assert_eq!(response.headers()["retry-after"], "5");
        assert_problem(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
        )
        .await;
    }
}
