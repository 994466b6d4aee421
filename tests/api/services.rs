//! Services: the journey, unique names, services in use.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn a_service_can_be_created_read_renamed_and_deleted() {
    let app = spawn_app().await;

    let created = app
        .post_json("/services", &json!({ "name": "  Inspection " }))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/services/{id}"));
    assert_eq!(created["name"], "Inspection", "names are trimmed");

    let fetched = app.get(&location).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(fetched.json::<Value>().await.unwrap(), created);

    let renamed = app
        .put_json(&location, &json!({ "name": "Full inspection" }))
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_ne!(renamed.headers()["etag"].to_str().unwrap(), etag);
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["name"], "Full inspection");
    assert_eq!(renamed["id"], created["id"]);

    let deleted = app.delete(&location).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&location).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test]
async fn service_names_are_unique_ignoring_case() {
    let app = spawn_app().await;
    app.create_service("Inspection").await;
    let other = app.create_service("Testing").await;

    let response = app
        .post_json("/services", &json!({ "name": "INSPECTION" }))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "SERVICE_NAME_TAKEN").await;

    let response = app
        .put_json(
            &format!("/services/{other}"),
            &json!({ "name": "inspection" }),
        )
        .await;
    assert_problem(response, StatusCode::CONFLICT, "SERVICE_NAME_TAKEN").await;
    let unchanged: Value = app
        .get(&format!("/services/{other}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        unchanged["name"], "Testing",
        "a failed rename changes nothing"
    );
}

#[tokio::test]
async fn case_is_ignored_in_any_script_but_accents_are_not() {
    let app = spawn_app().await;
    app.create_service("École").await;

    for same in ["école", "ÉCOLE"] {
        let response = app.post_json("/services", &json!({ "name": same })).await;
        assert_problem(response, StatusCode::CONFLICT, "SERVICE_NAME_TAKEN").await;
    }
    app.create_service("Ecole").await;
}

#[tokio::test]
async fn a_service_booked_by_an_order_cannot_be_deleted() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2022-11-01T11:11:11.111Z", json!(1), &[&service])
        .await;

    let response = app.delete(&format!("/services/{service}")).await;

    assert_problem(response, StatusCode::CONFLICT, "SERVICE_IN_USE").await;
    assert_eq!(
        app.get(&format!("/services/{service}")).await.status(),
        StatusCode::OK
    );
    // Once no order books it, it can go.
    app.delete(&format!("/orders/{}", order["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        app.delete(&format!("/services/{service}")).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn renaming_a_service_shows_in_its_orders_and_changes_their_etag() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2022-11-01T11:11:11.111Z", json!(1), &[&service])
        .await;
    let order_path = format!("/orders/{}", order["id"].as_str().unwrap());
    let etag_before = app.get(&order_path).await.headers()["etag"].clone();

    app.put_json(
        &format!("/services/{service}"),
        &json!({ "name": "Deep inspection" }),
    )
    .await;

    let after = app.get(&order_path).await;
    assert_ne!(after.headers()["etag"], etag_before);
    let after: Value = after.json().await.unwrap();
    assert_eq!(
        after["services"],
        json!([{ "id": service, "name": "Deep inspection" }])
    );
}

#[tokio::test]
async fn invalid_service_bodies_are_400_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), "name: is required"),
        (json!({ "name": "   " }), "name: must not be empty"),
        (
            json!({ "name": "x".repeat(201) }),
            "name: must be at most 200 characters",
        ),
        (json!({ "name": 5 }), "name: must be a string"),
        (
            json!({ "name": "Ok", "id": "1" }),
            "id: is not a known field",
        ),
    ];
    for (body, detail) in cases {
        let problem = assert_problem(
            app.post_json("/services", &body).await,
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().starts_with(detail),
            "{body}: {problem}"
        );
    }
    let list: Value = app.get("/services").await.json().await.unwrap();
    assert_eq!(list["services"], json!([]));
}

#[tokio::test]
async fn unknown_service_ids_of_any_form_are_404() {
    let app = spawn_app().await;
    for id in ["999999", "abc", "-5", "123456789012345678901234567890"] {
        let path = format!("/services/{id}");
        assert_problem(app.get(&path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
        assert_problem(
            app.put_json(&path, &json!({ "name": "x" })).await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        )
        .await;
        assert_problem(app.delete(&path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    }
}
