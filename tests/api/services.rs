//! Services: the journey, unique names, services in use.

use std::collections::HashSet;

use orders_client::types;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    assert_problem, etag, every_page, expect_problem, header, service_input, spawn_app,
};

#[tokio::test]
async fn a_service_can_be_created_read_listed_renamed_and_deleted() {
    // Arrange
    let app = spawn_app().await;
    let client = app.client();
    let mut others = Vec::new();
    for index in 0..4 {
        others.push(app.create_service(&format!("Service {index}")).await);
    }

    // Act and assert: create
    let created = client
        .service_create()
        .body(service_input("  Inspection "))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = header(created.headers(), "location");
    let created_etag = etag(&created);
    let created = created.into_inner();
    let id = created.id.as_str();
    assert_eq!(location, format!("/services/{id}"));
    assert_eq!(created.name, "Inspection", "names are trimmed");
    assert_eq!(created.created_at, created.updated_at);

    // read
    let fetched = client.service_view().id(id).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(etag(&fetched), created_etag);
    assert_eq!(fetched.into_inner(), created);

    // list every page, following next_page_token
    let (listed, pages) = every_page(async |token| {
        let mut request = client.service_list().page_size(2);
        if let Some(token) = token {
            request = request.page_token(token);
        }
        let page = request.send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.into_inner();
        assert!(page.services.len() <= 2, "{page:?}");
        (page.services, page.next_page_token)
    })
    .await;
    assert_eq!(pages, 3, "5 services, 2 a page");
    let listed_ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    let mut expected: Vec<&str> = others.iter().map(String::as_str).collect();
    expected.push(id);
    assert_eq!(listed_ids, expected, "every service once, in id order");
    assert_eq!(
        listed[4], created,
        "a listed service is the service as read"
    );

    // rename, if it has not changed since it was read
    let renamed = client
        .service_update()
        .id(id)
        .if_match(created_etag.as_str())
        .body(service_input("Full inspection"))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed_etag = etag(&renamed);
    assert_ne!(renamed_etag, created_etag);
    let renamed = renamed.into_inner();
    assert_eq!(renamed.name, "Full inspection");
    assert_eq!(renamed.id, created.id);
    assert_eq!(renamed.created_at, created.created_at);
    let reread = client.service_view().id(id).send().await.unwrap();
    assert_eq!(etag(&reread), renamed_etag);
    assert_eq!(reread.into_inner(), renamed);

    // delete, if it has not changed since it was renamed
    let deleted = client
        .service_delete()
        .id(id)
        .if_match(renamed_etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let view = client.service_view().id(id).send().await;
    expect_problem(view, StatusCode::NOT_FOUND, "NOT_FOUND");
    let delete = client.service_delete().id(id).send().await;
    expect_problem(delete, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn on_the_wire_a_service_has_exactly_its_documented_fields_and_a_delete_has_no_body() {
    // Arrange
    let app = spawn_app().await;

    // Act: raw HTTP, so the representation is seen as sent, not as a typed client reads it.
    let created = app
        .post_json("/services", &json!({ "name": "Inspection" }))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = header(created.headers(), "location");
    let service: Value = created.json().await.unwrap();
    let deleted = app.http.delete(app.url(&location)).send().await.unwrap();

    // Assert
    let fields: HashSet<&str> = service
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        HashSet::from([
            "id",
            "name",
            "created_at",
            "updated_at",
            "created_by",
            "updated_by"
        ])
    );
    assert_eq!(service["name"], "Inspection");
    assert_eq!(service["created_by"], crate::helpers::TEST_KEY_NAME);
    assert_eq!(service["updated_by"], crate::helpers::TEST_KEY_NAME);
    assert!(service["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted.text().await.unwrap(), "", "204 has an empty body");
}

#[tokio::test]
async fn service_names_are_unique_ignoring_case() {
    let app = spawn_app().await;
    let client = app.client();
    app.create_service("Inspection").await;
    let other = app.create_service("Testing").await;

    let response = client
        .service_create()
        .body(service_input("INSPECTION"))
        .send()
        .await;
    expect_problem(response, StatusCode::CONFLICT, "SERVICE_NAME_TAKEN");

    let response = client
        .service_update()
        .id(&other)
        .body(service_input("inspection"))
        .send()
        .await;
    expect_problem(response, StatusCode::CONFLICT, "SERVICE_NAME_TAKEN");
    let unchanged = client.service_view().id(&other).send().await.unwrap();
    assert_eq!(unchanged.name, "Testing", "a failed rename changes nothing");
}

#[tokio::test]
async fn case_is_ignored_in_any_script_but_accents_are_not() {
    let app = spawn_app().await;
    app.create_service("École").await;

    for same in ["école", "ÉCOLE"] {
        let response = app
            .client()
            .service_create()
            .body(service_input(same))
            .send()
            .await;
        expect_problem(response, StatusCode::CONFLICT, "SERVICE_NAME_TAKEN");
    }
    app.create_service("Ecole").await;
}

#[tokio::test]
async fn a_service_booked_by_an_order_cannot_be_deleted() {
    let app = spawn_app().await;
    let client = app.client();
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2022-11-01T11:11:11.111Z", 1.0, &[&service])
        .await;

    let response = client.service_delete().id(&service).send().await;

    expect_problem(response, StatusCode::CONFLICT, "SERVICE_IN_USE");
    let still_there = client.service_view().id(&service).send().await.unwrap();
    assert_eq!(still_there.status(), StatusCode::OK);
    // Once no order books it, it can go.
    client.order_delete().id(&order.id).send().await.unwrap();
    let deleted = client.service_delete().id(&service).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn renaming_a_service_shows_in_its_orders_and_changes_their_etag() {
    let app = spawn_app().await;
    let client = app.client();
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2022-11-01T11:11:11.111Z", 1.0, &[&service])
        .await;
    let etag_before = etag(&client.order_view().id(&order.id).send().await.unwrap());

    client
        .service_update()
        .id(&service)
        .body(service_input("Deep inspection"))
        .send()
        .await
        .unwrap();

    let after = client.order_view().id(&order.id).send().await.unwrap();
    assert_ne!(etag(&after), etag_before);
    let services: Vec<(&str, &str)> = after
        .services
        .iter()
        .map(|s| (s.id.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(services, [(service.as_str(), "Deep inspection")]);
}

/// The spec's pattern for a name is the server's rule, so the generated client refuses what the
/// server would (the server's own refusals are tested over raw HTTP below).
#[test]
fn the_client_refuses_names_the_server_would_refuse() {
    for refused in [
        "",
        "   ",
        "\u{3000}",
        "Tes\nting",
        "\tTabbed",
        &"x".repeat(201),
    ] {
        assert!(
            types::ServiceInputName::try_from(refused).is_err(),
            "{refused:?}"
        );
    }
    for accepted in ["Inspection", " Padded ", "École", &"é".repeat(200)] {
        assert!(
            types::ServiceInputName::try_from(accepted).is_ok(),
            "{accepted:?}"
        );
    }
}

/// Raw JSON: most of these bodies are what a typed client cannot send.
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
    let client = app.client();
    for id in ["999999", "abc", "-5", "123456789012345678901234567890"] {
        let view = client.service_view().id(id).send().await;
        expect_problem(view, StatusCode::NOT_FOUND, "NOT_FOUND");
        let update = client
            .service_update()
            .id(id)
            .body(service_input("x"))
            .send()
            .await;
        expect_problem(update, StatusCode::NOT_FOUND, "NOT_FOUND");
        let delete = client.service_delete().id(id).send().await;
        expect_problem(delete, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}
