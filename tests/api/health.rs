//! Liveness, readiness, and what happens when the database is gone.

use orders_client::types;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    expect_problem, header, order_input, service_input, spawn_app, spawn_app_without_database,
};

#[tokio::test]
async fn healthz_and_readyz_are_ok_with_a_database() {
    let app = spawn_app().await;
    let ok = types::HealthStatus {
        status: "ok".to_owned(),
    };

    let live = app.client().health_live().send().await.unwrap();
    let ready = app.client().health_ready().send().await.unwrap();

    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.into_inner(), ok);
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.into_inner(), ok);
    // On the wire, that is all there is: probes compare the body as it is.
    for path in ["/healthz", "/readyz"] {
        let body: Value = app.get(path).await.json().await.unwrap();
        assert_eq!(body, json!({ "status": "ok" }), "{path}");
    }
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
