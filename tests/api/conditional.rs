//! ETags, If-Match and If-None-Match.

use orders_client::{Error, ResponseValue, types};
use reqwest::StatusCode;

use crate::helpers::{
    TestApp, assert_problem, etag, expect_problem, header, order_input, service_input, spawn_app,
};

/// An app with one order; returns the app, the order's service, the order and its ETag.
async fn app_with_order() -> (TestApp, String, types::Order, String) {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let created = app
        .client()
        .order_create()
        .body(order_input("2022-11-01T11:11:11.111Z", 100.0, &[&service]))
        .send()
        .await
        .unwrap();
    let etag = etag(&created);
    (app, service, created.into_inner(), etag)
}

/// Asserts that a view answered 304 Not Modified, with `etag` and no body. The spec lists no
/// typed 3xx outcome, so the client hands a 304 back as an unexpected response.
async fn assert_not_modified<T: std::fmt::Debug>(
    result: Result<ResponseValue<T>, Error<types::Problem>>,
    etag: &str,
) {
    let response = match result {
        Err(Error::UnexpectedResponse(response)) => response,
        other => panic!("expected 304 Not Modified, got {other:?}"),
    };
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(response.headers(), "etag"), etag);
    assert_eq!(response.text().await.unwrap(), "", "304 has no body");
}

#[tokio::test]
async fn get_with_a_matching_if_none_match_returns_304_without_a_body() {
    let (app, _, order, etag) = app_with_order().await;
    let client = app.client();

    for held in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"nope\", {etag}"),
        "*".to_owned(),
    ] {
        let response = client
            .order_view()
            .id(&order.id)
            .if_none_match(&held)
            .send()
            .await;
        assert_not_modified(response, &etag).await;
    }
    let response = client
        .order_view()
        .id(&order.id)
        .if_none_match("\"999\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.into_inner(), order);
}

#[tokio::test]
async fn put_with_a_stale_if_match_returns_412_and_changes_nothing() {
    let (app, service, before, held) = app_with_order().await;
    let client = app.client();
    let update = order_input("2022-11-05T00:00:00Z", 1.0, &[&service]);

    for stale in ["\"999\"", "W/\"1\"", "garbage"] {
        let response = client
            .order_update()
            .id(&before.id)
            .if_match(stale)
            .body(update.clone())
            .send()
            .await;
        expect_problem(
            response,
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED",
        );
    }
    assert_eq!(app.order(&before.id).await, before);

    let response = client
        .order_update()
        .id(&before.id)
        .if_match(held.as_str())
        .body(update.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(etag(&response), held);

    // The old ETag is stale now.
    let response = client
        .order_update()
        .id(&before.id)
        .if_match(held.as_str())
        .body(update)
        .send()
        .await;
    expect_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );
}

#[tokio::test]
async fn delete_honours_if_match() {
    let (app, _, order, etag) = app_with_order().await;
    let client = app.client();

    let response = client
        .order_delete()
        .id(&order.id)
        .if_match("\"999\"")
        .send()
        .await;
    expect_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );
    let still_there = client.order_view().id(&order.id).send().await.unwrap();
    assert_eq!(still_there.status(), StatusCode::OK);

    let response = client
        .order_delete()
        .id(&order.id)
        .if_match(etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn service_writes_honour_if_match_and_reads_if_none_match() {
    let app = spawn_app().await;
    let client = app.client();
    let created = client
        .service_create()
        .body(service_input("Inspection"))
        .send()
        .await
        .unwrap();
    let etag = etag(&created);
    let id = created.into_inner().id;

    let response = client
        .service_view()
        .id(&id)
        .if_none_match(&etag)
        .send()
        .await;
    assert_not_modified(response, &etag).await;

    let response = client
        .service_update()
        .id(&id)
        .if_match("\"999\"")
        .body(service_input("X"))
        .send()
        .await;
    expect_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );
    let response = client
        .service_delete()
        .id(&id)
        .if_match("\"999\"")
        .send()
        .await;
    expect_problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );

    let response = client
        .service_update()
        .id(&id)
        .if_match(etag.as_str())
        .body(service_input("X"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = client
        .service_delete()
        .id(&id)
        .if_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// Raw headers: bytes beyond ASCII, and a list split over several lines, which a typed client
/// does not send.
#[tokio::test]
async fn an_if_match_with_bytes_beyond_ascii_matches_nothing_and_changes_nothing() {
    let (app, service, order, etag) = app_with_order().await;
    let url = app.url(&format!("/orders/{}", order.id));
    let beyond_ascii = reqwest::header::HeaderValue::from_bytes(b"\"1\xff\"").unwrap();

    let replace = app
        .http
        .put(&url)
        .header("if-match", beyond_ascii.clone())
        .json(&serde_json::json!({
            "datetime": "2022-11-05T00:00:00Z",
            "totalfee": 5,
            "services": [{ "id": service }],
        }))
        .send()
        .await
        .unwrap();
    assert_problem(
        replace,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    )
    .await;
    let delete = app
        .http
        .delete(&url)
        .header("if-match", beyond_ascii)
        .send()
        .await
        .unwrap();
    assert_problem(
        delete,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    )
    .await;

    app.assert_order_unchanged(&order, &etag).await;
}

#[tokio::test]
async fn an_if_match_list_on_several_lines_is_read_as_one_list() {
    let (app, _, order, etag) = app_with_order().await;

    let response = app
        .http
        .delete(app.url(&format!("/orders/{}", order.id)))
        .header("if-match", "\"999\"")
        .header("if-match", etag.as_str())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let gone = app.client().order_view().id(&order.id).send().await;
    expect_problem(gone, StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// RFC 9110 (13.1.1): `If-Match: *` is false when there is no current representation, so a
/// write to a missing resource under it fails its precondition rather than finding nothing.
#[tokio::test]
async fn if_match_star_on_a_missing_order_or_service_is_412() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let client = app.client();

    let replace = client
        .order_update()
        .id("999")
        .if_match("*")
        .body(order_input("2022-11-05T00:00:00Z", 5.0, &[&service]))
        .send()
        .await;
    expect_problem(
        replace,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );
    let delete = client.order_delete().id("999").if_match("*").send().await;
    expect_problem(
        delete,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );
    let rename = client
        .service_update()
        .id("999")
        .if_match("*")
        .body(service_input("Other"))
        .send()
        .await;
    expect_problem(
        rename,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );
    let delete = client.service_delete().id("abc").if_match("*").send().await;
    expect_problem(
        delete,
        StatusCode::PRECONDITION_FAILED,
        "PRECONDITION_FAILED",
    );

    // Without the header, the same writes find nothing.
    let delete = client.order_delete().id("999").send().await;
    expect_problem(delete, StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// An empty `If-Match` is no list of tags at all; the spec says `minLength: 1` and the server
/// refuses it, changing nothing.
#[tokio::test]
async fn an_empty_if_match_is_400_and_changes_nothing() {
    let (app, _, order, etag) = app_with_order().await;

    let delete = app
        .http
        .delete(app.url(&format!("/orders/{}", order.id)))
        .header("if-match", "")
        .send()
        .await
        .unwrap();

    let body = assert_problem(delete, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
    assert_eq!(body["detail"], "If-Match: must not be empty");
    app.assert_order_unchanged(&order, &etag).await;
}
