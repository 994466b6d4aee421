//! Orders: the whole journey, validation, money and datetimes.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    at, etag, every_page, expect_problem, header, order_body, order_input, spawn_app,
};

#[tokio::test]
async fn create_returns_201_with_location_etag_and_the_order() {
    // Arrange
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let testing = app.create_service("Testing").await;

    // Act
    let response = app
        .client()
        .order_create()
        .body(order_input(
            "2022-11-01T11:11:11.111Z",
            100.0,
            &[&testing, &inspection],
        ))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header(response.headers(), "location");
    let etag = etag(&response);
    let order = response.into_inner();
    assert_eq!(location, format!("/orders/{}", order.id));
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    assert_eq!(order.datetime, at("2022-11-01T11:11:11.111Z"));
    assert_eq!(order.totalfee, 100.0);
    let services: Vec<(&str, &str)> = order
        .services
        .iter()
        .map(|s| (s.id.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        services,
        [
            (testing.as_str(), "Testing"),
            (inspection.as_str(), "Inspection")
        ],
        "services come back in the order given, with their names"
    );
    assert_eq!(order.created_at, order.updated_at);
    assert!(
        order.id.parse::<i64>().unwrap() >= 1000,
        "assigned ids start above the sample data's"
    );
}

#[tokio::test]
async fn on_the_wire_an_order_has_exactly_the_briefs_fields_and_a_delete_has_no_body() {
    // Arrange
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;

    // Act: raw HTTP, so the representation is seen as sent, not as a typed client reads it.
    let created = app
        .post_json(
            "/orders",
            &order_body("2022-11-01T11:11:11.111Z", json!(100), &[&inspection]),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = header(created.headers(), "location");
    let order: Value = created.json().await.unwrap();
    let deleted = app.http.delete(app.url(&location)).send().await.unwrap();

    // Assert
    let fields: HashSet<&str> = order
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        HashSet::from([
            "id",
            "datetime",
            "totalfee",
            "services",
            "created_at",
            "updated_at",
            "created_by",
            "updated_by"
        ])
    );
    assert_eq!(order["datetime"], "2022-11-01T11:11:11.111Z");
    assert_eq!(order["totalfee"], json!(100));
    assert_eq!(
        order["services"],
        json!([{ "id": inspection, "name": "Inspection" }])
    );
    assert!(order["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(order["created_at"], order["updated_at"]);
    assert_eq!(order["created_by"], crate::helpers::TEST_KEY_NAME);
    assert_eq!(order["updated_by"], crate::helpers::TEST_KEY_NAME);
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted.text().await.unwrap(), "", "204 has an empty body");
}

#[tokio::test]
async fn an_order_can_be_created_read_listed_replaced_and_deleted() {
    // Arrange
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let analysis = app.create_service("Analysis").await;
    let client = app.client();
    let mut others = Vec::new();
    for day in 2..=5 {
        let other = app
            .create_order(&format!("2022-11-{day:02}T00:00:00Z"), 1.0, &[&analysis])
            .await;
        others.push(other.id);
    }

    // Act and assert: create
    let created = client
        .order_create()
        .body(order_input(
            "2022-11-01T11:11:11.111Z",
            100.0,
            &[&inspection],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created_etag = etag(&created);
    let created = created.into_inner();
    let id = created.id.as_str();

    // read
    let fetched = client.order_view().id(id).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(etag(&fetched), created_etag);
    assert_eq!(fetched.into_inner(), created);

    // list every page, following next_page_token
    let (listed, pages) = every_page(async |token| {
        let mut request = client.order_list().page_size(2);
        if let Some(token) = token {
            request = request.page_token(token);
        }
        let page = request.send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.into_inner();
        assert!(page.orders.len() <= 2, "{page:?}");
        (page.orders, page.next_page_token)
    })
    .await;
    assert_eq!(pages, 3, "5 orders, 2 a page");
    let listed_ids: Vec<&str> = listed.iter().map(|o| o.id.as_str()).collect();
    let mut expected: Vec<&str> = vec![id];
    expected.extend(others.iter().map(String::as_str));
    assert_eq!(listed_ids, expected, "every order once, by datetime");
    assert_eq!(listed[0], created, "a listed order is the order as read");

    // replace, if it has not changed since it was read
    let replaced = client
        .order_update()
        .id(id)
        .if_match(created_etag.as_str())
        .body(order_input("2022-11-01T08:00:00Z", 250.5, &[&analysis]))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced_etag = etag(&replaced);
    assert_ne!(
        replaced_etag, created_etag,
        "the ETag changes with the order"
    );
    let replaced = replaced.into_inner();
    assert_eq!(replaced.id, created.id);
    assert_eq!(replaced.datetime, at("2022-11-01T08:00:00Z"));
    assert_eq!(replaced.totalfee, 250.5);
    let services: Vec<(&str, &str)> = replaced
        .services
        .iter()
        .map(|s| (s.id.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(services, [(analysis.as_str(), "Analysis")]);
    assert_eq!(replaced.created_at, created.created_at);
    let reread = client.order_view().id(id).send().await.unwrap();
    assert_eq!(etag(&reread), replaced_etag);
    assert_eq!(reread.into_inner(), replaced);

    // delete, if it has not changed since it was replaced
    let deleted = client
        .order_delete()
        .id(id)
        .if_match(replaced_etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let view = client.order_view().id(id).send().await;
    expect_problem(view, StatusCode::NOT_FOUND, "NOT_FOUND");
    let delete = client.order_delete().id(id).send().await;
    expect_problem(delete, StatusCode::NOT_FOUND, "NOT_FOUND");
    let remaining: Vec<String> = app.all_orders().await.into_iter().map(|o| o.id).collect();
    assert_eq!(remaining, others);
}

#[tokio::test]
async fn unknown_ids_of_any_form_are_404() {
    let app = spawn_app().await;
    let client = app.client();
    let inspection = app.create_service("Inspection").await;
    let body = order_input("2022-11-01T11:11:11.111Z", 1.0, &[&inspection]);
    // A missing order is reported before anything wrong with the body's services.
    let body_naming_no_service = order_input("2022-11-01T11:11:11.111Z", 1.0, &["abc"]);
    for id in [
        "999999",
        "abc",
        "-1",
        "0",
        "1.5",
        "99999999999999999999999999",
        // Sent as %20.
        " ",
    ] {
        let view = client.order_view().id(id).send().await;
        expect_problem(view, StatusCode::NOT_FOUND, "NOT_FOUND");
        let update = client.order_update().id(id).body(body.clone()).send().await;
        expect_problem(update, StatusCode::NOT_FOUND, "NOT_FOUND");
        let update = client
            .order_update()
            .id(id)
            .body(body_naming_no_service.clone())
            .send()
            .await;
        expect_problem(update, StatusCode::NOT_FOUND, "NOT_FOUND");
        let delete = client.order_delete().id(id).send().await;
        expect_problem(delete, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    // None of those created anything.
    assert_eq!(app.all_orders().await, Vec::new());
}

#[tokio::test]
async fn an_order_naming_a_missing_service_is_422_and_lists_the_missing_ids() {
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;

    let response = app
        .client()
        .order_create()
        .body(order_input(
            "2022-11-01T11:11:11.111Z",
            1.0,
            &[&inspection, "999999", "abc"],
        ))
        .send()
        .await;

    let problem = expect_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_SERVICE",
    );
    // Ids the server could never have issued are unknown like unused ones.
    assert_eq!(problem.unknown_service_ids, ["999999", "abc"]);

    let response = app
        .client()
        .order_create()
        .body(order_input(
            "2022-11-01T11:11:11.111Z",
            1.0,
            &[&inspection, "999999"],
        ))
        .send()
        .await;
    let problem = expect_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_SERVICE",
    );
    assert_eq!(problem.unknown_service_ids, ["999999"]);
    assert_eq!(app.all_orders().await, Vec::new(), "nothing was created");
}

#[tokio::test]
async fn a_replace_naming_a_missing_service_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let created = app
        .create_order("2022-11-01T11:11:11.111Z", 100.0, &[&inspection])
        .await;

    let response = app
        .client()
        .order_update()
        .id(&created.id)
        .body(order_input("2022-12-01T00:00:00Z", 5.0, &["424242"]))
        .send()
        .await;

    let problem = expect_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_SERVICE",
    );
    assert_eq!(problem.unknown_service_ids, ["424242"]);
    assert_eq!(app.order(&created.id).await, created);
}

#[tokio::test]
async fn a_typed_order_that_breaks_a_rule_is_400_invalid_body_naming_the_rule() {
    let app = spawn_app().await;
    let s = app.create_service("Inspection").await;
    let at = "2022-11-01T11:11:11.111Z";
    let cases = [
        (
            order_input(at, 19.999, &[&s]),
            "totalfee: at most 2 decimal places",
        ),
        (
            order_input(at, -0.01, &[&s]),
            "totalfee: must not be negative",
        ),
        (
            order_input(at, 1_000_000_000.01, &[&s]),
            "totalfee: must be at most 1000000000",
        ),
        (
            order_input(at, 1.0, &[]),
            "services: must name at least one service",
        ),
        (order_input(at, 1.0, &[&s, &s]), "services: names service"),
    ];
    for (body, detail) in cases {
        let response = app.client().order_create().body(body.clone()).send().await;

        let problem = expect_problem(response, StatusCode::BAD_REQUEST, "INVALID_BODY");
        assert!(
            problem.detail.starts_with(detail),
            "for {body:?}: expected {detail:?}, got {:?}",
            problem.detail
        );
    }
    assert_eq!(
        app.all_orders().await,
        Vec::new(),
        "no refused request created anything"
    );
}

/// Sends `body` to create an order and expects a 400 whose detail starts with `detail`.
async fn assert_refused(app: &crate::helpers::TestApp, body: Value, code: &str, detail: &str) {
    let response = app.post_json("/orders", &body).await;
    let problem = crate::helpers::assert_problem(response, StatusCode::BAD_REQUEST, code).await;
    let actual = problem["detail"].as_str().unwrap();
    assert!(
        actual.starts_with(detail),
        "for {body}: expected {detail:?}, got {actual:?}"
    );
}

/// Raw JSON: most of these bodies are what a typed client cannot send.
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
    assert_eq!(
        app.all_orders().await,
        Vec::new(),
        "no refused request created anything"
    );
}

/// Raw JSON text: the typed client sends fees as binary floating point.
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
        let response = app.post_json_text("/orders", body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "fee {fee}");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let text = app.get(&location).await.text().await.unwrap();
        assert!(
            text.contains(&format!(r#""totalfee":{expected},"#)),
            "fee {fee} should read back as {expected}: {text}"
        );
    }
}

/// Raw JSON: the typed client sends every date-time in UTC, and reads them as instants.
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
        let response = app
            .post_json("/orders", &order_body(sent, json!(1), &[&s]))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{sent}");
        let order: Value = response.json().await.unwrap();
        assert_eq!(order["datetime"], returned, "{sent}");
    }
}
