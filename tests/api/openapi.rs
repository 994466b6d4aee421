//! The contract: the committed openapi.yaml is what the code generates, and it is served.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

const COMMITTED_SPEC: &str = include_str!("../../openapi.yaml");

#[tokio::test]
async fn the_committed_openapi_yaml_is_what_the_code_generates() {
    let app = spawn_app().await;
    let generated = app.get("/openapi.yaml").await.text().await.unwrap();
    assert!(
        generated == COMMITTED_SPEC,
        "openapi.yaml is out of date: run `cargo run -q -- openapi > openapi.yaml` and review the diff"
    );
}

#[tokio::test]
async fn the_spec_names_every_operation_with_an_id_a_tag_and_a_summary() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let spec: Value = response.json().await.unwrap();

    let mut operation_ids = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has an operationId"));
            assert_eq!(
                operation["tags"].as_array().map(Vec::len),
                Some(1),
                "{id} has one tag"
            );
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{id} has a summary"
            );
            operation_ids.push(id.to_owned());
        }
    }
    operation_ids.sort();
    // Examples show numbers as numbers (exact-number support must not leak into the spec).
    assert_eq!(
        spec["components"]["schemas"]["Order"]["example"]["totalfee"],
        100
    );
    assert!(
        !app.get("/openapi.yaml")
            .await
            .text()
            .await
            .unwrap()
            .contains("serde_json")
    );
    assert_eq!(
        operation_ids,
        [
            "health_live",
            "health_ready",
            "order_create",
            "order_delete",
            "order_list",
            "order_update",
            "order_view",
            "service_create",
            "service_delete",
            "service_list",
            "service_update",
            "service_view",
        ]
    );
}

#[tokio::test]
async fn the_docs_page_is_served_with_its_assets_inline() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("SwaggerUIBundle"), "Swagger UI is bundled");
    assert!(
        !html.contains("cdn") && !html.contains("unpkg"),
        "no assets from a CDN"
    );
}
