//! The contract as served: what the published spec must say, and the docs page that shows it.
//! That the committed openapi.yaml is what the code generates is checked in `cli`, through
//! the command that regenerates it.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

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
            "event_list",
            "free_slots_list",
            "health_live",
            "health_ready",
            "metrics_view",
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
    assert!(
        html.contains(r#""ETag""#) && html.contains("ViewOrder"),
        "the page shows the published spec, with its header names and links"
    );
}

/// The operations in the published spec, as (`METHOD path`, operation).
fn operations(spec: &Value) -> Vec<(String, &Value)> {
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push((format!("{} {path}", method.to_uppercase()), operation));
        }
    }
    operations
}

fn is_described(value: &Value) -> bool {
    value["description"]
        .as_str()
        .is_some_and(|text| !text.trim().is_empty())
}

#[tokio::test]
async fn every_operation_parameter_schema_and_property_is_described() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();

    let mut undescribed = Vec::new();
    for (operation_name, operation) in operations(&spec) {
        if !is_described(operation) {
            undescribed.push(operation_name.clone());
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if !is_described(parameter) {
                undescribed.push(format!("{operation_name} parameter {}", parameter["name"]));
            }
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            for (header, definition) in response["headers"].as_object().into_iter().flatten() {
                if !is_described(definition) {
                    undescribed.push(format!("{operation_name} {status} header {header}"));
                }
            }
        }
    }
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        if !is_described(schema) {
            undescribed.push(format!("schema {name}"));
        }
        for (property, definition) in schema["properties"].as_object().into_iter().flatten() {
            if !is_described(definition) {
                undescribed.push(format!("schema {name} property {property}"));
            }
        }
    }
    assert!(undescribed.is_empty(), "not described: {undescribed:#?}");
}

#[tokio::test]
async fn every_error_response_is_problem_json_with_an_example_per_code() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();

    for (operation_name, operation) in operations(&spec) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            if !status.starts_with(['4', '5']) {
                continue;
            }
            let content = response["content"].as_object().unwrap();
            let media_types: Vec<&String> = content.keys().collect();
            assert_eq!(
                media_types,
                ["application/problem+json"],
                "{operation_name} {status}"
            );
            let examples = content["application/problem+json"]["examples"]
                .as_object()
                .unwrap_or_else(|| panic!("{operation_name} {status} has examples"));
            assert!(!examples.is_empty(), "{operation_name} {status}");
            for (code, example) in examples {
                let body = &example["value"];
                assert_eq!(body["code"], code.as_str(), "{operation_name} {status}");
                assert_eq!(
                    body["status"].to_string(),
                    *status,
                    "{operation_name} {status} {code}"
                );
                assert!(
                    response["description"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("`{code}`")),
                    "{operation_name} {status} describes {code}"
                );
            }
        }
    }
}

#[tokio::test]
async fn media_types_are_plain_and_header_names_are_in_their_usual_case() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();

    let mut header_names = std::collections::BTreeSet::new();
    for (operation_name, operation) in operations(&spec) {
        let request_types = operation["requestBody"]["content"].as_object();
        for (status, response) in operation["responses"].as_object().unwrap() {
            let response_types = response["content"].as_object();
            for media_type in request_types
                .iter()
                .chain(&response_types)
                .flat_map(|c| c.keys())
            {
                // Text only for the metrics, in Prometheus' format.
                assert!(
                    ["application/json", "application/problem+json", "text/plain"]
                        .contains(&media_type.as_str()),
                    "{operation_name} {status}: {media_type}"
                );
            }
            header_names.extend(
                response["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, _)| name.clone()),
            );
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] == "header" {
                header_names.insert(parameter["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(
        header_names.into_iter().collect::<Vec<_>>(),
        [
            "ETag",
            "Idempotency-Key",
            "Idempotent-Replayed",
            "If-Match",
            "If-None-Match",
            "Location",
            "Retry-After",
            "WWW-Authenticate",
            "X-Request-Id"
        ]
    );
}

#[tokio::test]
async fn links_from_a_created_resource_lead_to_operations_that_exist() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let operation_ids: Vec<&str> = operations(&spec)
        .iter()
        .filter_map(|(_, operation)| operation["operationId"].as_str())
        .collect();

    let created = &spec["paths"]["/orders"]["post"]["responses"]["201"]["links"];
    let mut targets = Vec::new();
    for link in created.as_object().unwrap().values() {
        let target = link["operationId"].as_str().unwrap();
        assert!(operation_ids.contains(&target), "{target} exists");
        assert_eq!(link["parameters"]["id"], "$response.body#/id");
        targets.push(target);
    }
    assert_eq!(targets, ["order_view", "order_update", "order_delete"]);
    assert!(spec["paths"]["/services"]["post"]["responses"]["201"]["links"].is_object());
}

/// The example problems in the spec are what the server says: on the sample data, each
/// request below provokes one example's code on one operation, and the body it gets is the
/// example's, but for `request_id`. Examples for faults (500, 503) are not provoked here.
#[tokio::test]
async fn the_spec_example_problems_are_what_the_server_really_says() {
    let app = spawn_app().await;
    orders::storage::seed::load(&app.pool).await.unwrap();
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    // Less than 3 hours from the sample's order 223, unless told otherwise.
    let order = |totalfee: Value, services: &[&str]| {
        json!({
            "datetime": "2022-11-01T12:00:00Z",
            "totalfee": totalfee,
            "services": services.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
        })
    };
    let http = &app.http;
    let cases = [
        (
            ("/orders", "post", "MALFORMED_JSON"),
            http.post(app.url("/orders"))
                .header("content-type", "application/json")
                .body("x"),
        ),
        (
            ("/orders", "post", "INVALID_BODY"),
            http.post(app.url("/orders"))
                .json(&order(json!(19.999), &["123"])),
        ),
        (
            ("/orders", "post", "ORDER_TIME_CONFLICT"),
            http.post(app.url("/orders"))
                .json(&order(json!(100), &["123"])),
        ),
        (
            ("/orders", "post", "UNKNOWN_SERVICE"),
            http.post(app.url("/orders")).json(&json!({
                "datetime": "2022-11-05T00:00:00Z",
                "totalfee": 100,
                "services": [{ "id": "999" }],
            })),
        ),
        (
            ("/orders", "post", "UNSUPPORTED_MEDIA_TYPE"),
            http.post(app.url("/orders"))
                .header("content-type", "text/plain")
                .body("{}"),
        ),
        (
            ("/orders", "post", "PAYLOAD_TOO_LARGE"),
            http.post(app.url("/orders"))
                .header("content-type", "application/json")
                .body(" ".repeat(70 * 1024)),
        ),
        (
            ("/orders", "get", "INVALID_PARAMETER"),
            http.get(app.url("/orders?page_size=0")),
        ),
        (
            ("/orders/{id}", "get", "NOT_FOUND"),
            http.get(app.url("/orders/999")),
        ),
        (
            ("/orders/{id}", "delete", "INVALID_PARAMETER"),
            http.delete(app.url("/orders/223")).header("if-match", ""),
        ),
        (
            ("/orders/{id}", "delete", "PRECONDITION_FAILED"),
            http.delete(app.url("/orders/223"))
                .header("if-match", "\"999\""),
        ),
        (
            ("/services", "post", "INVALID_BODY"),
            http.post(app.url("/services"))
                .json(&json!({ "name": "   " })),
        ),
        (
            ("/services", "post", "SERVICE_NAME_TAKEN"),
            http.post(app.url("/services"))
                .json(&json!({ "name": "inspection" })),
        ),
        (
            ("/services/{id}", "get", "NOT_FOUND"),
            http.get(app.url("/services/999")),
        ),
        (
            ("/services/{id}", "delete", "SERVICE_IN_USE"),
            http.delete(app.url("/services/123")),
        ),
    ];

    for ((path, method, code), request) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16().to_string();
        let mut actual: Value = response.json().await.unwrap();
        let examples = &spec["paths"][path][method]["responses"][status.as_str()]["content"]["application/problem+json"]
            ["examples"];
        let mut example = examples[code]["value"].clone();
        assert!(
            example.is_object(),
            "{method} {path}: no {status} example for {code}; got {actual}"
        );
        actual["request_id"] = Value::Null;
        example["request_id"] = Value::Null;
        assert_eq!(actual, example, "{method} {path} {code}");
    }
}

#[test]
fn openapi_prints_the_committed_spec() {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    // Not assert_eq: on failure it would print both specs whole.
    assert!(
        output.stdout == include_str!("../../openapi.yaml").as_bytes(),
        "openapi.yaml is out of date: run `cargo run -q -- openapi > openapi.yaml` and review the diff"
    );
}
