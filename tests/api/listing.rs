//! Listing: keyset pages, filters, parameters.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app};

/// Creates `count` orders 3 hours apart from `start`, in shuffled order; returns their ids.
async fn create_orders(
    app: &TestApp,
    service: &str,
    start: DateTime<Utc>,
    count: i64,
) -> Vec<String> {
    let mut ids = Vec::new();
    // Create out of time order, so that listing order is not creation order.
    let mut offsets: Vec<i64> = (0..count).collect();
    offsets.sort_by_key(|offset| (offset * 7919) % count);
    for offset in offsets {
        let at = (start + Duration::hours(3 * offset)).to_rfc3339();
        let order = app.create_order(&at, json!(1), &[service]).await;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Follows `next_page_token` from `first_query` to the end; returns every order seen.
async fn walk(app: &TestApp, first_query: &str) -> (Vec<Value>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut query = first_query.to_owned();
    loop {
        let response = app.get(&format!("/orders?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.unwrap();
        pages += 1;
        seen.extend(page["orders"].as_array().unwrap().iter().cloned());
        match page.get("next_page_token") {
            Some(token) => query = format!("{first_query}&page_token={}", token.as_str().unwrap()),
            None => break,
        }
    }
    (seen, pages)
}

fn start() -> DateTime<Utc> {
    "2022-11-01T00:00:00Z".parse().unwrap()
}

#[tokio::test]
async fn walking_every_page_sees_every_order_exactly_once_in_datetime_order() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let ids = create_orders(&app, &service, start(), 23).await;

    let (seen, pages) = walk(&app, "page_size=5").await;

    assert_eq!(pages, 5);
    let seen_ids: Vec<String> = seen
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen_ids.len(), 23, "no order twice");
    assert_eq!(
        seen_ids.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>(),
        "every order once"
    );
    let datetimes: Vec<&str> = seen
        .iter()
        .map(|o| o["datetime"].as_str().unwrap())
        .collect();
    let mut sorted = datetimes.clone();
    sorted.sort();
    assert_eq!(datetimes, sorted, "ordered by datetime");
}

#[tokio::test]
async fn the_last_page_has_no_token_and_an_empty_list_is_one_page() {
    let app = spawn_app().await;
    let page: Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(page, json!({ "orders": [] }));

    let service = app.create_service("Inspection").await;
    create_orders(&app, &service, start(), 2).await;
    let page: Value = app.get("/orders?page_size=2").await.json().await.unwrap();
    assert_eq!(page["orders"].as_array().unwrap().len(), 2);
    assert!(
        page.get("next_page_token").is_none(),
        "exactly full last page: {page}"
    );
}

#[tokio::test]
async fn from_and_to_select_a_half_open_range() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    create_orders(&app, &service, start(), 6).await; // 00:00, 03:00, ..., 15:00

    let (seen, _) = walk(&app, "from=2022-11-01T03:00:00Z&to=2022-11-01T12:00:00Z").await;

    let datetimes: Vec<&str> = seen
        .iter()
        .map(|o| o["datetime"].as_str().unwrap())
        .collect();
    assert_eq!(
        datetimes,
        [
            "2022-11-01T03:00:00.000Z",
            "2022-11-01T06:00:00.000Z",
            "2022-11-01T09:00:00.000Z"
        ]
    );
    // Offsets work in filters too.
    let (seen, _) = walk(&app, "from=2022-11-01T14:00:00%2B02:00").await;
    let datetimes: Vec<&str> = seen
        .iter()
        .map(|o| o["datetime"].as_str().unwrap())
        .collect();
    assert_eq!(
        datetimes,
        ["2022-11-01T12:00:00.000Z", "2022-11-01T15:00:00.000Z"]
    );
}

#[tokio::test]
async fn service_id_selects_the_orders_that_book_it() {
    let app = spawn_app().await;
    let inspection = app.create_service("Inspection").await;
    let testing = app.create_service("Testing").await;
    let a = app
        .create_order("2022-11-01T00:00:00Z", json!(1), &[&inspection])
        .await;
    let b = app
        .create_order("2022-11-01T03:00:00Z", json!(1), &[&testing, &inspection])
        .await;
    app.create_order("2022-11-01T06:00:00Z", json!(1), &[&testing])
        .await;

    let (seen, _) = walk(&app, &format!("service_id={inspection}&page_size=1")).await;

    let ids: Vec<&Value> = seen.iter().map(|o| &o["id"]).collect();
    assert_eq!(ids, [&a["id"], &b["id"]]);
    assert_eq!(
        seen[1]["services"].as_array().unwrap().len(),
        2,
        "matching orders keep all their services"
    );
    let (seen, _) = walk(&app, "service_id=abc").await;
    assert!(seen.is_empty());
}

#[tokio::test]
async fn page_size_is_capped_at_1000() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    // 1001 orders in one statement: this test is about the cap, not about creating orders.
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "WITH o AS (
                 INSERT INTO orders (scheduled_at, total_fee)
                 SELECT timestamptz '2022-01-01T00:00:00Z' + n * interval '3 hours', 1
                 FROM generate_series(0, 1000) AS n
                 RETURNING id
             )
             INSERT INTO order_services (order_id, service_id, position)
             SELECT id, $1, 1 FROM o",
            &[&service.parse::<i64>().unwrap()],
        )
        .await
        .unwrap();

    let page: Value = app
        .get("/orders?page_size=5000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["orders"].as_array().unwrap().len(), 1000);
    assert!(page.get("next_page_token").is_some());
    let page: Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(
        page["orders"].as_array().unwrap().len(),
        100,
        "default page size"
    );
}

#[tokio::test]
async fn services_are_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for index in 0..7 {
        created.push(app.create_service(&format!("Service {index}")).await);
    }
    let mut seen = Vec::new();
    let mut query = "page_size=3".to_owned();
    loop {
        let page: Value = app
            .get(&format!("/services?{query}"))
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            page["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned()),
        );
        match page.get("next_page_token") {
            Some(token) => query = format!("page_size=3&page_token={}", token.as_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, created, "every service once, in id order");
}

#[tokio::test]
async fn bad_list_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        ("/orders?page_size=-1", "page_size: must be at least 1"),
        ("/orders?page_size=0", "page_size: must be at least 1"),
        ("/orders?page_size=abc", "page_size: must be an integer"),
        (
            "/orders?page_token=garbage",
            "page_token: is not a token this API issued",
        ),
        (
            "/orders?from=yesterday",
            "from: must be an RFC 3339 date-time",
        ),
        (
            "/orders?to=2022-11-01T00:00:00",
            "to: must be an RFC 3339 date-time",
        ),
        // A well-formed token for an instant outside any order's range.
        (
            "/orders?page_token=bzE6LTMwMDAwMDAwMDAwMDAwMDAwMDox",
            "page_token: is not a token this API issued",
        ),
        ("/services?page_size=-5", "page_size: must be at least 1"),
        (
            "/services?page_token=b3JkZXI",
            "page_token: is not a token this API issued",
        ),
    ];
    for (path, detail) in cases {
        let problem = assert_problem(
            app.get(path).await,
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().starts_with(detail),
            "{path}: {problem}"
        );
    }
}
