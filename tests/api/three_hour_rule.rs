//! The 3-hour rule: no two orders less than 3 hours apart, enforced by the database.

use orders_client::types;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    TestApp, assert_problem, at, expect_problem, order_body, order_input, spawn_app, status_of,
};

const ANCHOR: &str = "2022-11-01T12:00:00.000Z";

async fn app_with_anchor_order() -> (TestApp, String, types::Order) {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let anchor = app.create_order(ANCHOR, 100.0, &[&service]).await;
    (app, service, anchor)
}

#[tokio::test]
async fn create_within_three_hours_of_another_returns_409_naming_it() {
    let (app, service, anchor) = app_with_anchor_order().await;

    for datetime in [
        "2022-11-01T09:00:00.001Z",
        "2022-11-01T14:59:59.999Z",
        ANCHOR,
    ] {
        let response = app
            .client()
            .order_create()
            .body(order_input(datetime, 1.0, &[&service]))
            .send()
            .await;
        let problem = expect_problem(response, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT");
        assert_eq!(
            problem.conflicting_order_id.as_deref(),
            Some(anchor.id.as_str()),
            "{datetime}"
        );
    }
    // The client sends UTC; raw JSON shows that another offset is the same instant.
    let response = app
        .post_json(
            "/orders",
            &order_body("2022-11-01T13:00:00+01:00", json!(1), &[&service]),
        )
        .await;
    let problem = assert_problem(response, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT").await;
    assert_eq!(problem["conflicting_order_id"], anchor.id.as_str());
    assert_eq!(
        app.all_orders().await,
        [anchor],
        "no conflicting order was created"
    );
}

#[tokio::test]
async fn create_exactly_three_hours_before_or_after_another_is_fine() {
    let (app, service, _) = app_with_anchor_order().await;

    app.create_order("2022-11-01T09:00:00.000Z", 1.0, &[&service])
        .await;
    app.create_order("2022-11-01T15:00:00.000Z", 1.0, &[&service])
        .await;
}

#[tokio::test]
async fn moving_an_order_within_its_own_window_is_fine() {
    let (app, service, anchor) = app_with_anchor_order().await;

    let response = app
        .client()
        .order_update()
        .id(&anchor.id)
        .body(order_input("2022-11-01T13:30:00Z", 100.0, &[&service]))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.datetime, at("2022-11-01T13:30:00Z"));
}

#[tokio::test]
async fn moving_an_order_within_three_hours_of_another_returns_409_and_changes_nothing() {
    let (app, service, anchor) = app_with_anchor_order().await;
    let other = app
        .create_order("2022-11-02T12:00:00Z", 7.0, &[&service])
        .await;

    let response = app
        .client()
        .order_update()
        .id(&other.id)
        .body(order_input("2022-11-01T14:59:59.999Z", 8.0, &[&service]))
        .send()
        .await;

    let problem = expect_problem(response, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT");
    assert_eq!(problem.conflicting_order_id, Some(anchor.id));
    assert_eq!(
        app.order(&other.id).await,
        other,
        "a failed update changes nothing"
    );
}

#[tokio::test]
async fn deleting_an_order_frees_its_slot() {
    let (app, service, anchor) = app_with_anchor_order().await;
    let client = app.client();
    let conflicting = order_input("2022-11-01T13:00:00Z", 1.0, &[&service]);
    let refused = client.order_create().body(conflicting.clone()).send().await;
    assert_eq!(status_of(&refused), StatusCode::CONFLICT);

    let deleted = client.order_delete().id(&anchor.id).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let created = client.order_create().body(conflicting).send().await;
    assert_eq!(status_of(&created), StatusCode::CREATED);
}

/// A request with several faults gets the one a write meets first (missing or changed order,
/// then the 3-hour rule, then unknown services), whether its unknown service id is well-formed
/// (`999`, which only the write can find missing) or no id at all (`abc`).
#[tokio::test]
async fn a_request_with_several_faults_gets_the_same_error_whatever_its_service_ids_look_like() {
    let (app, _, anchor) = app_with_anchor_order().await;
    let other = app
        .create_order("2022-11-05T00:00:00Z", 1.0, &[&anchor.services[0].id])
        .await;
    let client = app.client();

    for unknown in ["999", "abc"] {
        let clashing = order_input(ANCHOR, 1.0, &[unknown]);
        let create = client.order_create().body(clashing.clone()).send().await;
        let body = expect_problem(create, StatusCode::CONFLICT, "ORDER_TIME_CONFLICT");
        assert_eq!(
            body.conflicting_order_id.as_deref(),
            Some(anchor.id.as_str())
        );

        let stale = client
            .order_update()
            .id(&other.id)
            .if_match("\"1.0\"")
            .body(clashing.clone())
            .send()
            .await;
        expect_problem(
            stale,
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED",
        );

        let missing = client
            .order_update()
            .id("99999")
            .body(clashing)
            .send()
            .await;
        expect_problem(missing, StatusCode::NOT_FOUND, "NOT_FOUND");

        let free_slot = order_input("2022-11-09T00:00:00Z", 1.0, &[unknown]);
        let unknown_only = client
            .order_update()
            .id(&other.id)
            .body(free_slot)
            .send()
            .await;
        let body = expect_problem(
            unknown_only,
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNKNOWN_SERVICE",
        );
        assert_eq!(body.unknown_service_ids, [unknown]);
    }
}
