//! Orders: the whole journey, validation, money and datetimes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, order_body, spawn_app};

#[tokio::test]
async fn create_returns_201_with_location_etag_and_the_order() {
    // Arrange
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let testing = app.create_service("Testing").await;

    // Act
    let response = app
        .post_json(
            "/orders",
            &order_body(
                "2022-11-01T11:11:11.111Z",
                json!(100),
                &[&testing, &inspection],
            ),
        )
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    assert_eq!(location, format!("/orders/{id}"));
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    assert_eq!(order["datetime"], "2022-11-01T11:11:11.111Z");
    assert_eq!(order["totalfee"], json!(100));
    assert_eq!(
        order["services"],
        json!([{ "id": testing, "name": "Testing" }, { "id": inspection, "name": "Inspection" }]),
        "services come back in the order given, with their names"
    );
    assert!(order["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(order["created_at"], order["updated_at"]);
    assert!(
        id.parse::<i64>().unwrap() >= 1000,
        "assigned ids start above the sample data's"
    );
}

#[tokio::test]
async fn an_order_can_be_read_replaced_and_deleted() {
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let analysis = app.create_service("Analysis").await;
    let created = app
        .create_order("2022-11-01T11:11:11.111Z", json!(100), &[&inspection])
        .await;
    let path = format!("/orders/{}", created["id"].as_str().unwrap());

    let fetched = app.get(&path).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    let first_etag = fetched.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(fetched.json::<Value>().await.unwrap(), created);

    let replaced = app
        .put_json(
            &path,
            &order_body("2022-11-02T08:00:00Z", json!(250.5), &[&analysis]),
        )
        .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let second_etag = replaced.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(first_etag, second_etag, "the ETag changes with the order");
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["datetime"], "2022-11-02T08:00:00.000Z");
    assert_eq!(replaced["totalfee"], json!(250.5));
    assert_eq!(
        replaced["services"],
        json!([{ "id": analysis, "name": "Analysis" }])
    );
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_eq!(
        app.get(&path).await.json::<Value>().await.unwrap(),
        replaced
    );

    let deleted = app.delete(&path).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted.text().await.unwrap(), "", "204 has an empty body");
    assert_problem(app.get(&path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_problem(app.delete(&path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test]
async fn unknown_ids_of_any_form_are_404() {
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let body = order_body("2022-11-01T11:11:11.111Z", json!(1), &[&inspection]);
    // A missing order is reported before anything wrong with the body's services.
    let body_naming_no_service = order_body("2022-11-01T11:11:11.111Z", json!(1), &["abc"]);
    for id in [
        "999999",
        "abc",
        "-1",
        "0",
        "1.5",
        "99999999999999999999999999",
        "%20",
    ] {
        let path = format!("/orders/{id}");
        assert_problem(app.get(&path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
        assert_problem(
            app.put_json(&path, &body).await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        )
        .await;
        let response = app.put_json(&path, &body_naming_no_service).await;
        assert_problem(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;
        assert_problem(app.delete(&path).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    }
    // None of those created anything.
    let list: Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(list["orders"], json!([]));
}

#[tokio::test]
async fn an_order_naming_a_missing_service_is_422_and_lists_the_missing_ids() {
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;

    let response = app
        .post_json(
            "/orders",
            &order_body(
                "2022-11-01T11:11:11.111Z",
                json!(1),
                &[&inspection, "999999", "abc"],
            ),
        )
        .await;

    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_SERVICE",
    )
    .await;
    // Ids the server could never have issued are unknown like unused ones.
    assert_eq!(problem["unknown_service_ids"], json!(["999999", "abc"]));

    let response = app
        .post_json(
            "/orders",
            &order_body(
                "2022-11-01T11:11:11.111Z",
                json!(1),
                &[&inspection, "999999"],
            ),
        )
        .await;
    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_SERVICE",
    )
    .await;
    assert_eq!(problem["unknown_service_ids"], json!(["999999"]));
    let list: Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(list["orders"], json!([]), "nothing was created");
}

#[tokio::test]
async fn a_replace_naming_a_missing_service_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let created = app
        .create_order("2022-11-01T11:11:11.111Z", json!(100), &[&inspection])
        .await;
    let path = format!("/orders/{}", created["id"].as_str().unwrap());

    let response = app
        .put_json(
            &path,
            &order_body("2022-12-01T00:00:00Z", json!(5), &["424242"]),
        )
        .await;

    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_SERVICE",
    )
    .await;
    assert_eq!(app.get(&path).await.json::<Value>().await.unwrap(), created);
}

/// Sends `body` to create an order and expects a 400 whose detail starts with `detail`.
async fn assert_refused(app: &crate::helpers::TestApp, body: Value, code: &str, detail: &str) {
    let response = app.post_json("/orders", &body).await;
    let problem = assert_problem(response, StatusCode::BAD_REQUEST, code).await;
    let actual = problem["detail"].as_str().unwrap();
    assert!(
        actual.starts_with(detail),
        "for {body}: expected {detail:?}, got {actual:?}"
    );
}

#[tokio::test]
async fn invalid_bodies_are_400_naming_the_field_and_the_rule() {
    let app = spawn_app().await;
    let s = app.create_service("Inspection").await;
    let at = "2022-11-01T11:11:11.111Z";
    let cases = [
        (
            json!({ "totalfee": 1, "services": [{ "id": s }] }),
            "datetime: is required",
        ),
        (
            json!({ "datetime": at, "services": [{ "id": s }] }),
            "totalfee: is required",
        ),
        (
            json!({ "datetime": at, "totalfee": 1 }),
            "services: is required",
        ),
        (
            json!({ "datetime": null, "totalfee": 1, "services": [{ "id": s }] }),
            "datetime: is required",
        ),
        (
            json!({ "datetime": at, "totalFee": 1, "totalfee": 1, "services": [{ "id": s }] }),
            "totalFee: is not a known field",
        ),
        (
            json!({ "id": "5", "datetime": at, "totalfee": 1, "services": [{ "id": s }] }),
            "id: is not a known field",
        ),
        (
            json!({ "datetime": 5, "totalfee": 1, "services": [{ "id": s }] }),
            "datetime: must be a string",
        ),
        (
            json!({ "datetime": "2022-11-01T11:11:11", "totalfee": 1, "services": [{ "id": s }] }),
            "datetime: must be an RFC 3339 date-time with a UTC offset",
        ),
        (
            json!({ "datetime": "tomorrow", "totalfee": 1, "services": [{ "id": s }] }),
            "datetime: must be an RFC 3339",
        ),
        (
            json!({ "datetime": at, "totalfee": "1", "services": [{ "id": s }] }),
            "totalfee: must be a number",
        ),
        (
            json!({ "datetime": at, "totalfee": 19.999, "services": [{ "id": s }] }),
            "totalfee: at most 2 decimal places",
        ),
        (
            json!({ "datetime": at, "totalfee": -0.01, "services": [{ "id": s }] }),
            "totalfee: must not be negative",
        ),
        (
            json!({ "datetime": at, "totalfee": 1000000000.01, "services": [{ "id": s }] }),
            "totalfee: must be at most 1000000000",
        ),
        (
            json!({ "datetime": at, "totalfee": 1, "services": [] }),
            "services: must name at least one service",
        ),
        (
            json!({ "datetime": at, "totalfee": 1, "services": { "id": s } }),
            "services: must be an array",
        ),
        (
            json!({ "datetime": at, "totalfee": 1, "services": [{ "id": s }, { "id": s }] }),
            "services: names service",
        ),
        (
            json!({ "datetime": at, "totalfee": 1, "services": [{ "id": 123 }] }),
            "services[0].id: must be a string",
        ),
        (
            json!({ "datetime": at, "totalfee": 1, "services": [{ "id": s }, "x"] }),
            "services[1]: must be a JSON object",
        ),
        (
            json!({ "datetime": at, "totalfee": 1, "services": [{ "id": s, "name": "x" }] }),
            "services[0].name: is not a known field",
        ),
        (json!([1, 2]), "the request body must be a JSON object"),
    ];
    for (body, detail) in cases {
        assert_refused(&app, body, "INVALID_BODY", detail).await;
    }
    let fifty_one: Vec<String> = (1..=51).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = fifty_one.iter().map(String::as_str).collect();
    assert_refused(
        &app,
        order_body(at, json!(1), &ids),
        "INVALID_BODY",
        "services: must name at most 50 services",
    )
    .await;
    let list: Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(
        list["orders"],
        json!([]),
        "no refused request created anything"
    );
}

#[tokio::test]
async fn money_is_exact_to_the_cent() {
    let app = spawn_app().await;
    let s = app.create_service("Inspection").await;
    let fees = [
        "19.99",
        "0.1",
        "0.2",
        "0",
        "1000000000",
        "999999999.99",
        "1.50",
        "2e1",
    ];
    let expected = [
        "19.99",
        "0.1",
        "0.2",
        "0",
        "1000000000",
        "999999999.99",
        "1.5",
        "20",
    ];
    for (index, (fee, expected)) in fees.iter().zip(expected).enumerate() {
        // Raw JSON text, so the number reaches the server exactly as written.
        let body = format!(
            r#"{{"datetime":"2022-11-{:02}T00:00:00Z","totalfee":{fee},"services":[{{"id":"{s}"}}]}}"#,
            index + 1
        );
        let response = app
            .client
            .post(app.url("/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "fee {fee}");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let text = app.get(&location).await.text().await.unwrap();
        assert!(
            text.contains(&format!(r#""totalfee":{expected},"#)),
            "fee {fee} should read back as {expected}: {text}"
        );
    }
}

#[tokio::test]
async fn datetimes_are_normalised_to_utc_milliseconds() {
    let app = spawn_app().await;
    let s = app.create_service("Inspection").await;
    let cases = [
        ("2022-11-01T13:11:11.111+02:00", "2022-11-01T11:11:11.111Z"),
        ("2022-11-05T00:00:00-05:30", "2022-11-05T05:30:00.000Z"),
        ("2022-11-10T10:00:00.123456789Z", "2022-11-10T10:00:00.123Z"),
        ("2022-11-15t10:00:00z", "2022-11-15T10:00:00.000Z"),
    ];
    for (sent, returned) in cases {
        let order = app.create_order(sent, json!(1), &[&s]).await;
        assert_eq!(order["datetime"], returned, "{sent}");
    }
}
