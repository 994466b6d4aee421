//! ETags, If-Match and If-None-Match.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, order_body, spawn_app};

async fn app_with_order() -> (TestApp, String, String, String) {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let response = app
        .post_json(
            "/orders",
            &order_body("2022-11-01T11:11:11.111Z", json!(100), &[&service]),
        )
        .await;
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    (app, service, location, etag)
}

#[tokio::test]
async fn get_with_a_matching_if_none_match_returns_304_without_a_body() {
    let (app, _, path, etag) = app_with_order().await;

    for header in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"nope\", {etag}"),
        "*".to_owned(),
    ] {
        let response = app.get_if_none_match(&path, &header).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{header}");
        assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(response.text().await.unwrap(), "");
    }
    let response = app.get_if_none_match(&path, "\"999\"").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn put_with_a_stale_if_match_returns_412_and_changes_nothing() {
    let (app, service, path, etag) = app_with_order().await;
    let before: Value = app.get(&path).await.json().await.unwrap();
    let update = order_body("2022-11-05T00:00:00Z", json!(1), &[&service]);

    for stale in ["\"999\"", "W/\"1\"", "garbage"] {
        let response = app.put_json_if_match(&path, &update, stale).await;
        assert_problem(
            response,
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED",
        )
        .await;
    }
    assert_eq!(app.get(&path).await.json::<Value>().await.unwrap(), before);

    let response = app.put_json_if_match(&path, &update, &etag).await;
    assert_eq!(response.status(), StatusCode::OK);
    let new_etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);

    // The old ETag is stale now.
    let response = app.put_json_if_match(&path, &update, &etag).await;
    assert_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    )
    .await;
}

#[tokio::test]
async fn delete_honours_if_match() {
    let (app, _, path, etag) = app_with_order().await;

    let response = app.delete_if_match(&path, "\"999\"").await;
    assert_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    )
    .await;
    assert_eq!(app.get(&path).await.status(), StatusCode::OK);

    let response = app.delete_if_match(&path, &etag).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn service_writes_honour_if_match_and_reads_if_none_match() {
    let app = spawn_app().await;
    let response = app
        .post_json("/services", &json!({ "name": "Inspection" }))
        .await;
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let path = response.headers()["location"].to_str().unwrap().to_owned();

    let response = app.get_if_none_match(&path, &etag).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    let rename = json!({ "name": "X" });

    let response = app.put_json_if_match(&path, &rename, "\"999\"").await;
    assert_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    )
    .await;
    let response = app.delete_if_match(&path, "\"999\"").await;
    assert_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    )
    .await;

    let response = app.put_json_if_match(&path, &rename, &etag).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.delete_if_match(&path, "*").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}
