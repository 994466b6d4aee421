//! Requests that another reader (a proxy, a gateway) could read differently from the service
//! are refused, and change nothing; responses say how they may be handled.

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_problem, header, spawn_app};

/// A create body for the sample-free test database, with `extra` spliced in after `totalfee`.
fn order_text(service: &str, extra: &str) -> String {
    format!(
        r#"{{"datetime": "2023-05-01T10:00:00Z", "totalfee": 1{extra}, "services": [{{"id": "{service}"}}]}}"#
    )
}

async fn order_count(app: &TestApp) -> usize {
    app.all_orders().await.len()
}

#[tokio::test]
async fn a_body_with_a_key_twice_is_refused_naming_the_key_and_creates_nothing() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;

    let top_level = app
        .post_json_text("/orders", order_text(&service, r#", "totalfee": 2"#))
        .await;
    let nested = app
        .post_json_text(
            "/orders",
            format!(
                r#"{{"datetime": "2023-05-01T10:00:00Z", "totalfee": 1, "services": [{{"id": "{service}", "id": "999"}}]}}"#
            ),
        )
        .await;

    let top_level = assert_problem(top_level, StatusCode::BAD_REQUEST, "INVALID_BODY").await;
    assert!(
        top_level["detail"]
            .as_str()
            .unwrap()
            .starts_with("totalfee: appears more than once"),
        "{top_level}"
    );
    let nested = assert_problem(nested, StatusCode::BAD_REQUEST, "INVALID_BODY").await;
    assert!(
        nested["detail"]
            .as_str()
            .unwrap()
            .starts_with("services[0].id: appears more than once"),
        "{nested}"
    );
    assert_eq!(order_count(&app).await, 0, "nothing was created");
    // The same body without the repetition is fine.
    let created = app
        .post_json_text("/orders", order_text(&service, ""))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_query_parameter_given_twice_is_refused_naming_it() {
    let app = spawn_app().await;

    for query in ["page_size=1&page_size=2", "page_size=1&page%5Fsize=2"] {
        let response = app
            .http
            .get(app.url(&format!("/orders?{query}")))
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("page_size: given more than once"),
            "{query}: {body}"
        );
    }
    let once = app
        .http
        .get(app.url("/orders?page_size=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(once.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_in_an_encoding_or_charset_the_service_does_not_read_is_415_and_creates_nothing() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let body = order_text(&service, "");

    let compressed = app
        .http
        .post(app.url("/orders"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let latin1 = app
        .http
        .post(app.url("/orders"))
        .header("content-type", "application/json; charset=iso-8859-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();

    let compressed = assert_problem(
        compressed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    assert!(
        compressed["detail"].as_str().unwrap().contains("gzip"),
        "{compressed}"
    );
    let latin1 = assert_problem(
        latin1,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    assert!(
        latin1["detail"].as_str().unwrap().contains("iso-8859-1"),
        "{latin1}"
    );
    assert_eq!(order_count(&app).await, 0, "nothing was created");

    // UTF-8, declared in any case, and the identity encoding are read as usual.
    let declared = app
        .http
        .post(app.url("/orders"))
        .header("content-type", "application/json; charset=UTF-8")
        .header("content-encoding", "identity")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn responses_forbid_sniffing_and_only_the_spec_and_docs_may_be_cached() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;

    for (path, cache_control) in [
        (format!("/services/{service}"), "no-store"),
        ("/orders".to_owned(), "no-store"),
        ("/services/999".to_owned(), "no-store"),
        ("/healthz".to_owned(), "no-store"),
        ("/openapi.json".to_owned(), "public, max-age=300"),
        ("/openapi.yaml".to_owned(), "public, max-age=300"),
        ("/docs".to_owned(), "public, max-age=300"),
    ] {
        let response = app.get(&path).await;
        let headers = response.headers();
        assert_eq!(
            header(headers, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        assert_eq!(header(headers, "cache-control"), cache_control, "{path}");
    }
    let refused = app.anonymous.get(app.url("/orders")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(refused.headers(), "x-content-type-options"),
        "nosniff"
    );
    assert_eq!(header(refused.headers(), "cache-control"), "no-store");
}

#[tokio::test]
async fn a_reversed_range_and_a_leap_second_are_refused_not_guessed_at() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;

    let reversed = app
        .get("/orders?from=2023-05-02T00:00:00Z&to=2023-05-01T00:00:00Z")
        .await;
    let leap = app
        .post_json_text(
            "/orders",
            format!(
                r#"{{"datetime": "2016-12-31T23:59:60Z", "totalfee": 1, "services": [{{"id": "{service}"}}]}}"#
            ),
        )
        .await;

    let reversed = assert_problem(reversed, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
    assert_eq!(reversed["detail"], "from: must not be later than to");
    let leap = assert_problem(leap, StatusCode::BAD_REQUEST, "INVALID_BODY").await;
    assert!(
        leap["detail"]
            .as_str()
            .unwrap()
            .starts_with("datetime: must not be a leap second"),
        "{leap}"
    );
    assert_eq!(order_count(&app).await, 0, "nothing was created");
    // An empty range is a question with an empty answer, not a mistake.
    let empty = app
        .get("/orders?from=2023-05-01T00:00:00Z&to=2023-05-01T00:00:00Z")
        .await;
    assert_eq!(empty.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_service_name_that_looks_blank_is_refused_like_an_empty_one() {
    let app = spawn_app().await;

    for name in ["\u{200b}", " \u{feff}\u{200d} ", "\u{2060}\u{ad}"] {
        let response = app
            .post_json("/services", &serde_json::json!({ "name": name }))
            .await;
        let body = assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_BODY").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("name: must not be empty"),
            "{name:?}: {body}"
        );
    }
    let visible = app
        .post_json(
            "/services",
            &serde_json::json!({ "name": "Re\u{200b}pair" }),
        )
        .await;
    assert_eq!(visible.status(), StatusCode::CREATED);
    let listed = app.client().service_list().send().await.unwrap();
    assert_eq!(
        listed.services.len(),
        1,
        "only the visible name was created"
    );
}
