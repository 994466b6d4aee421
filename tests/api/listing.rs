//! Listing: keyset pages, filters, parameters.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use orders_client::types;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, at, every_page, expect_problem, spawn_app};

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
        let datetime = (start + Duration::hours(3 * offset)).to_rfc3339();
        let order = app.create_order(&datetime, 1.0, &[service]).await;
        ids.push(order.id);
    }
    ids
}

/// What a walk through the orders asks for on every page.
#[derive(Default)]
struct Filter<'a> {
    page_size: Option<u64>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    service_id: Option<&'a str>,
}

/// Every order the filter selects, walking every page; and the number of pages.
async fn walk(app: &TestApp, filter: Filter<'_>) -> (Vec<types::Order>, usize) {
    every_page(async |token| {
        let mut request = app.client().order_list();
        if let Some(page_size) = filter.page_size {
            request = request.page_size(page_size);
        }
        if let Some(from) = filter.from {
            request = request.from(at(from));
        }
        if let Some(to) = filter.to {
            request = request.to(at(to));
        }
        if let Some(service_id) = filter.service_id {
            request = request.service_id(service_id);
        }
        if let Some(token) = token {
            request = request.page_token(token);
        }
        let page = request.send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.into_inner();
        (page.orders, page.next_page_token)
    })
    .await
}

fn start() -> DateTime<Utc> {
    "2022-11-01T00:00:00Z".parse().unwrap()
}

fn datetimes(orders: &[types::Order]) -> Vec<DateTime<Utc>> {
    orders.iter().map(|o| o.datetime).collect()
}

#[tokio::test]
async fn walking_every_page_sees_every_order_exactly_once_in_datetime_order() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let ids = create_orders(&app, &service, start(), 23).await;

    let filter = Filter {
        page_size: Some(5),
        ..Filter::default()
    };
    let (seen, pages) = walk(&app, filter).await;

    assert_eq!(pages, 5);
    let seen_ids: Vec<&String> = seen.iter().map(|o| &o.id).collect();
    assert_eq!(seen_ids.len(), 23, "no order twice");
    assert_eq!(
        seen_ids.into_iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>(),
        "every order once"
    );
    let datetimes = datetimes(&seen);
    let mut sorted = datetimes.clone();
    sorted.sort();
    assert_eq!(datetimes, sorted, "ordered by datetime");
}

/// Raw JSON: on the last page the token is absent, not null, which a typed client cannot tell.
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

    let filter = Filter {
        from: Some("2022-11-01T03:00:00Z"),
        to: Some("2022-11-01T12:00:00Z"),
        ..Filter::default()
    };
    let (seen, _) = walk(&app, filter).await;

    assert_eq!(
        datetimes(&seen),
        [
            at("2022-11-01T03:00:00.000Z"),
            at("2022-11-01T06:00:00.000Z"),
            at("2022-11-01T09:00:00.000Z")
        ]
    );
    // Offsets work in filters too. Raw: the client sends its filters in UTC.
    let page: Value = app
        .get("/orders?from=2022-11-01T14:00:00%2B02:00")
        .await
        .json()
        .await
        .unwrap();
    assert!(page.get("next_page_token").is_none(), "{page}");
    let datetimes: Vec<&str> = page["orders"]
        .as_array()
        .unwrap()
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
        .create_order("2022-11-01T00:00:00Z", 1.0, &[&inspection])
        .await;
    let b = app
        .create_order("2022-11-01T03:00:00Z", 1.0, &[&testing, &inspection])
        .await;
    app.create_order("2022-11-01T06:00:00Z", 1.0, &[&testing])
        .await;

    let filter = Filter {
        service_id: Some(&inspection),
        page_size: Some(1),
        ..Filter::default()
    };
    let (seen, _) = walk(&app, filter).await;

    assert_eq!(seen, [a, b]);
    assert_eq!(
        seen[1].services.len(),
        2,
        "matching orders keep all their services"
    );
    let filter = Filter {
        service_id: Some("abc"),
        ..Filter::default()
    };
    let (seen, _) = walk(&app, filter).await;
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
                 INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
                 SELECT timestamptz '2022-01-01T00:00:00Z' + n * interval '3 hours', 1, 'bulk', 'bulk'
                 FROM generate_series(0, 1000) AS n
                 RETURNING id
             )
             INSERT INTO order_services (order_id, service_id, position)
             SELECT id, $1, 1 FROM o",
            &[&service.parse::<i64>().unwrap()],
        )
        .await
        .unwrap();

    let page = app
        .client()
        .order_list()
        .page_size(5000)
        .send()
        .await
        .unwrap();
    assert_eq!(page.orders.len(), 1000);
    assert!(page.next_page_token.is_some());
    let page = app.client().order_list().send().await.unwrap();
    assert_eq!(page.orders.len(), 100, "default page size");
}

#[tokio::test]
async fn services_are_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for index in 0..7 {
        created.push(app.create_service(&format!("Service {index}")).await);
    }
    let (seen, pages) = every_page(async |token| {
        let mut request = app.client().service_list().page_size(3);
        if let Some(token) = token {
            request = request.page_token(token);
        }
        let page = request.send().await.unwrap().into_inner();
        (page.services, page.next_page_token)
    })
    .await;
    let seen: Vec<String> = seen.into_iter().map(|service| service.id).collect();
    assert_eq!(seen, created, "every service once, in id order");
    assert_eq!(pages, 3, "7 services, 3 a page");
}

#[tokio::test]
async fn page_tokens_the_api_did_not_issue_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let client = app.client();
    let responses = [
        client.order_list().page_token("garbage").send().await,
        // A well-formed token for an instant outside any order's range.
        client
            .order_list()
            .page_token("bzE6LTMwMDAwMDAwMDAwMDAwMDAwMDox")
            .send()
            .await,
    ];
    let service_response = client.service_list().page_token("b3JkZXI").send().await;

    let problems = responses
        .into_iter()
        .map(|response| expect_problem(response, StatusCode::BAD_REQUEST, "INVALID_PARAMETER"))
        .chain([expect_problem(
            service_response,
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        )]);
    for problem in problems {
        assert_eq!(
            problem.detail,
            "page_token: is not a token this API issued; pass next_page_token from a previous page unchanged"
        );
    }
}

/// Raw query strings: values of the wrong type or out of the documented range, which a typed
/// client cannot send.
#[tokio::test]
async fn list_parameters_a_typed_client_cannot_send_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        ("/orders?page_size=abc", "page_size: must be an integer"),
        ("/orders?page_size=0", "page_size: must be at least 1"),
        ("/orders?page_size=-1", "page_size: must be at least 1"),
        ("/services?page_size=-5", "page_size: must be at least 1"),
        (
            "/orders?from=yesterday",
            "from: must be an RFC 3339 date-time with a UTC offset, like 2022-11-01T11:11:11.111Z",
        ),
        (
            "/orders?to=2022-11-01T00:00:00",
            "to: must be an RFC 3339 date-time with a UTC offset, like 2022-11-01T11:11:11.111Z",
        ),
    ];
    for (path, detail) in cases {
        let problem = assert_problem(
            app.get(path).await,
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        )
        .await;
        assert_eq!(problem["detail"], detail, "{path}");
    }
}

#[tokio::test]
async fn large_pages_read_row_by_row_hold_every_order_once_with_all_its_services() {
    // Pages over 100 orders are read a row at a time (one row per booked service), and each
    // page stops at the first row of the order after it.
    let app = spawn_app().await;
    let services = [
        app.create_service("Inspection").await,
        app.create_service("Analysis").await,
        app.create_service("Testing").await,
    ];
    let ids: Vec<i64> = services.iter().map(|id| id.parse().unwrap()).collect();
    app.pool
        .get()
        .await
        .unwrap()
        .execute(
            "WITH o AS (
                 INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
                 SELECT timestamptz '2022-01-01T00:00:00Z' + n * interval '3 hours', 1, 'bulk', 'bulk'
                 FROM generate_series(1, 400) AS n
                 RETURNING id
             )
             INSERT INTO order_services (order_id, service_id, position)
             SELECT o.id, s.id, 4 - s.position
             FROM o, unnest($1::bigint[]) WITH ORDINALITY AS s (id, position)",
            &[&ids],
        )
        .await
        .unwrap();

    let (seen, pages) = every_page(|token| {
        let mut request = app.client().order_list().page_size(150);
        if let Some(token) = token {
            request = request.page_token(token);
        }
        async move {
            let page = request.send().await.unwrap().into_inner();
            (page.orders, page.next_page_token)
        }
    })
    .await;

    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 400);
    let distinct: HashSet<_> = seen.iter().map(|order| &order.id).collect();
    assert_eq!(distinct.len(), 400, "every order once");
    // Booked in the opposite order to the services' ids: shown in the order booked.
    let in_booked_order: Vec<&str> = services.iter().rev().map(String::as_str).collect();
    for order in &seen {
        let booked: Vec<&str> = order
            .services
            .iter()
            .map(|service| service.id.as_str())
            .collect();
        assert_eq!(booked, in_booked_order);
    }
}
