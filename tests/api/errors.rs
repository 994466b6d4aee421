//! Errors from the framework's layers and faults on the server's side: every one is
//! problem+json with a request id. Most are what a typed client cannot send, so these tests
//! speak raw HTTP.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_problem, expect_problem, order_input, spawn_app};

#[tokio::test]
async fn malformed_json_is_400_malformed_json() {
    let app = spawn_app().await;
    for body in ["{", "{\"name\": }", "not json"] {
        let response = app.post_json_text("/services", body).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "MALFORMED_JSON").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("the request body is not valid JSON")
        );
    }
}

#[tokio::test]
async fn an_empty_body_is_400_invalid_body() {
    let app = spawn_app().await;
    let response = app.post_json_text("/orders", "").await;
    let problem = assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_BODY").await;
    assert_eq!(problem["detail"], "the request body must be a JSON object");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    for content_type in [Some("text/plain"), Some("application/xml"), None] {
        let mut request = app.http.post(app.url("/orders")).body("{}");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_problem(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        )
        .await;
    }
}

/// Other JSON media types have other meanings (a merge patch is not a replacement), so only
/// `application/json` itself is read; its parameters are fine.
#[tokio::test]
async fn a_body_of_another_json_media_type_is_415_and_changes_nothing() {
    let app = spawn_app().await;
    let body = json!({ "name": "Inspection" }).to_string();
    for content_type in ["application/merge-patch+json", "application/problem+json"] {
        let response = app
            .http
            .post(app.url("/services"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_problem(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        )
        .await;
    }
    let listed = app.client().service_list().send().await.unwrap();
    assert_eq!(listed.services, Vec::new(), "nothing was created");

    let response = app
        .http
        .post(app.url("/services"))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Sent with its length declared, streamed without one, or by the typed client (which the
/// spec tells to expect the 413 as a problem): the limit holds each way and nothing is created.
#[tokio::test]
async fn a_body_over_64_kib_is_413_and_creates_nothing_however_it_is_sent() {
    // Arrange
    let app = spawn_app().await;
    let service = json!({ "name": "x".repeat(70 * 1024) });
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = serde_json::to_vec(&service)
        .unwrap()
        .chunks(8192)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    // A typed order can be too large too, through a service id no one would issue.
    let huge_id = "9".repeat(70 * 1024);

    // Act
    let declared = app.post_json("/services", &service).await;
    // Chunked: no Content-Length, so the limit applies as the body streams in.
    let streamed = app
        .post_json_text(
            "/services",
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    let typed = app
        .client()
        .order_create()
        .body(order_input("2022-11-01T11:11:11.111Z", 1.0, &[&huge_id]))
        .send()
        .await;

    // Assert
    let detail = "the request body must be at most 65536 bytes";
    for (how, response) in [("declared", declared), ("streamed", streamed)] {
        let problem =
            assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
        assert_eq!(problem["detail"], detail, "{how}");
    }
    let problem = expect_problem(typed, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    assert_eq!(problem.detail, detail, "sent by the client");
    let services = app.client().service_list().send().await.unwrap();
    assert_eq!(services.services, Vec::new(), "no service was created");
    assert_eq!(app.all_orders().await, Vec::new(), "no order was created");
}

#[tokio::test]
async fn a_method_a_path_does_not_have_is_405_with_allow() {
    let app = spawn_app().await;
    let cases = [
        (reqwest::Method::PATCH, "/orders", "POST, GET, HEAD"),
        (
            reqwest::Method::POST,
            "/orders/123",
            "GET, PUT, DELETE, HEAD",
        ),
        (reqwest::Method::DELETE, "/services", "POST, GET, HEAD"),
        (reqwest::Method::POST, "/healthz", "GET, HEAD"),
        (reqwest::Method::POST, "/docs", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_problem(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        )
        .await;
    }
}

#[tokio::test]
async fn head_is_served_wherever_get_is() {
    let app = spawn_app().await;
    for path in ["/orders", "/healthz", "/openapi.yaml"] {
        let response = app.http.head(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(response.text().await.unwrap(), "", "HEAD has no body");
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    let problem = assert_problem(app.get("/nope").await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_eq!(problem["detail"], "there is nothing at /nope");
    assert_problem(
        app.get("/orders/1/services").await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn every_response_carries_the_callers_request_id_or_a_new_one() {
    let app = spawn_app().await;

    let response = app
        .http
        .get(app.url("/orders"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");

    let response = app
        .http
        .get(app.url("/orders/999"))
        .header("x-request-id", "trace-43")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-43");
    let problem = assert_problem(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_eq!(problem["request_id"], "trace-43");

    let first = app.get("/healthz").await.headers()["x-request-id"].clone();
    let second = app.get("/healthz").await.headers()["x-request-id"].clone();
    assert!(!first.is_empty());
    assert_ne!(first, second, "generated ids are unique");
}

#[tokio::test]
async fn a_fault_on_the_servers_side_is_a_500_problem_that_keeps_its_cause_to_itself() {
    // Arrange: a schema the service does not expect, as after a botched manual change.
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let database = app.pool.get().await.unwrap();
    database
        .batch_execute("ALTER TABLE orders RENAME TO orders_moved_away")
        .await
        .unwrap();

    // Act
    let listed = app.client().order_list().send().await;
    let created = app
        .client()
        .order_create()
        .body(order_input("2022-11-01T11:11:11.111Z", 1.0, &[&service]))
        .send()
        .await;

    // Assert: the cause (`relation "orders" does not exist`) stays in the log; the caller
    // gets the same words for every fault.
    for outcome in [listed.map(|_| ()), created.map(|_| ())] {
        let problem = expect_problem(outcome, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
        assert_eq!(
            problem.detail,
            "the server failed to handle the request; quote the request_id when reporting it"
        );
    }
}

/// A handler that panics (here: reading a row whose date no `Timestamp` can hold, which only
/// a hand-made row can have) answers a 500 problem with the request id; the connection and
/// the process go on serving.
#[tokio::test]
async fn a_panic_in_a_handler_is_a_500_problem_and_the_service_goes_on() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let client = app.pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO orders (id, scheduled_at, total_fee, created_by, updated_by)
             OVERRIDING SYSTEM VALUE VALUES (5000, '10000-01-01T00:00:00Z', 1, 'bulk', 'bulk');
             INSERT INTO order_services (order_id, service_id, position) VALUES (5000, {service}, 1);"
        ))
        .await
        .unwrap();

    let panicked = app
        .http
        .get(app.url("/orders/5000"))
        .header("x-request-id", "panic-test-1")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(panicked, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL").await;
    assert_eq!(problem["request_id"], "panic-test-1");

    // The same client (and, kept alive, the same connection), then a new one: both served.
    let after = app.get(&format!("/services/{service}")).await;
    assert_eq!(after.status(), StatusCode::OK);
    let fresh = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
}

/// Sends `request` as raw bytes on a connection of its own and reads until the server closes it.
async fn exchange_raw(app: &crate::helpers::TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request the HTTP library cannot parse never reaches the service's code, so it is answered
/// by the library itself: a status line, no body, and the connection closed. The API guide lists
/// these; this test notices if any of them changes.
#[tokio::test]
async fn requests_the_http_library_cannot_parse_get_its_bare_status_and_a_closed_connection() {
    let app = spawn_app().await;
    // The whole head is bounded (16 KiB), so a long request line meets that bound first.
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
    let many_headers = format!(
        "GET /orders HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..120)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect::<String>()
    );
    let huge_header = format!(
        "GET /orders HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(500_000)
    );
    let cases = [
        (long_uri.as_str(), "431 Request Header Fields Too Large"),
        (&many_headers, "431 Request Header Fields Too Large"),
        (&huge_header, "431 Request Header Fields Too Large"),
        ("GARBAGE\r\n\r\n", "400 Bad Request"),
        (
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            "400 Bad Request",
        ),
        (
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
            "400 Bad Request",
        ),
    ];
    for (request, status) in cases {
        let answer = exchange_raw(&app, request.as_bytes()).await;
        let what = &request[..request.len().min(40)];
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{what:?}: {answer}"
        );
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("content-length: 0\r\n"),
            "{what:?}: {answer}"
        );
        assert!(
            lower.contains("connection: close\r\n"),
            "{what:?}: {answer}"
        );
        assert!(answer.ends_with("\r\n\r\n"), "{what:?}: no body: {answer}");
    }
    assert_eq!(
        app.get("/orders").await.status(),
        StatusCode::OK,
        "the service goes on"
    );
}
