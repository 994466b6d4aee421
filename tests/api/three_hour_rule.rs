//! The 3-hour rule: no two orders less than 3 hours apart, enforced by the database.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, order_body, spawn_app};

const ANCHOR: &str = "2022-11-01T12:00:00.000Z";

async fn app_with_anchor_order() -> (TestApp, String, Value) {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let anchor = app.create_order(ANCHOR, json!(100), &[&service]).await;
    (app, service, anchor)
}

#[tokio::test]
async fn create_within_three_hours_of_another_returns_409_naming_it() {
    let (app, service, anchor) = app_with_anchor_order().await;

    for at in [
        "2022-11-01T09:00:00.001Z",
        "2022-11-01T14:59:59.999Z",
        ANCHOR,
        "2022-11-01T13:00:00+01:00",
    ] {
        let response = app
            .post_json("/orders", &order_body(at, json!(1), &[&service]))
            .await;
        let problem = assert_problem(response, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT").await;
        assert_eq!(problem["conflicting_order_id"], anchor["id"], "{at}");
    }
    let list: Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(
        list["orders"].as_array().unwrap().len(),
        1,
        "no conflicting order was created"
    );
}

#[tokio::test]
async fn create_exactly_three_hours_before_or_after_another_is_fine() {
    let (app, service, _) = app_with_anchor_order().await;

    app.create_order("2022-11-01T09:00:00.000Z", json!(1), &[&service])
        .await;
    app.create_order("2022-11-01T15:00:00.000Z", json!(1), &[&service])
        .await;
}

#[tokio::test]
async fn moving_an_order_within_its_own_window_is_fine() {
    let (app, service, anchor) = app_with_anchor_order().await;
    let path = format!("/orders/{}", anchor["id"].as_str().unwrap());

    let response = app
        .put_json(
            &path,
            &order_body("2022-11-01T13:30:00Z", json!(100), &[&service]),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["datetime"], "2022-11-01T13:30:00.000Z");
}

#[tokio::test]
async fn moving_an_order_within_three_hours_of_another_returns_409_and_changes_nothing() {
    let (app, service, anchor) = app_with_anchor_order().await;
    let other = app
        .create_order("2022-11-02T12:00:00Z", json!(7), &[&service])
        .await;
    let path = format!("/orders/{}", other["id"].as_str().unwrap());

    let response = app
        .put_json(
            &path,
            &order_body("2022-11-01T14:59:59.999Z", json!(8), &[&service]),
        )
        .await;

    let problem = assert_problem(response, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT").await;
    assert_eq!(problem["conflicting_order_id"], anchor["id"]);
    assert_eq!(
        app.get(&path).await.json::<Value>().await.unwrap(),
        other,
        "a failed update changes nothing"
    );
}

#[tokio::test]
async fn deleting_an_order_frees_its_slot() {
    let (app, service, anchor) = app_with_anchor_order().await;
    let conflicting = order_body("2022-11-01T13:00:00Z", json!(1), &[&service]);
    assert_eq!(
        app.post_json("/orders", &conflicting).await.status(),
        StatusCode::CONFLICT
    );

    let deleted = app
        .delete(&format!("/orders/{}", anchor["id"].as_str().unwrap()))
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    assert_eq!(
        app.post_json("/orders", &conflicting).await.status(),
        StatusCode::CREATED
    );
}
