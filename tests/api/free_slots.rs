//! `GET /free-slots`: the stretches of a window at which a new order could be scheduled, as
//! the 3-hour rule leaves them, at millisecond precision; its validation, security and route;
//! and its query on a large calendar.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use orders::{domain::Scope, storage::free_slots::ORDERS_NEAR_WINDOW};
use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, at, header, http_client_with_key, order_body, spawn_app,
};

/// The free slots of `[from, to]` as the service renders them, asserting a 200.
async fn free_slots(app: &TestApp, from: &str, to: &str) -> Value {
    let response = app
        .http
        .get(app.url("/free-slots"))
        .query(&[("from", from), ("to", to)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "from={from} to={to}");
    assert_eq!(
        header(response.headers(), "content-type"),
        "application/json; charset=utf-8"
    );
    response.json().await.unwrap()
}

/// The body that lists `slots`, each `(start, end)` as the API writes instants.
fn listed(slots: &[(&str, &str)]) -> Value {
    json!({
        "free_slots": slots
            .iter()
            .map(|(start, end)| json!({ "start": start, "end": end }))
            .collect::<Vec<_>>()
    })
}

/// Books orders at `datetimes`, creating the service they book on first use.
async fn book(app: &TestApp, datetimes: &[&str]) -> Vec<String> {
    let service =
        match app.get("/services").await.json::<Value>().await.unwrap()["services"][0]["id"]
            .as_str()
        {
            Some(id) => id.to_owned(),
            None => app.create_service("Inspection").await,
        };
    let mut ids = Vec::new();
    for datetime in datetimes {
        ids.push(app.create_order(datetime, 1.0, &[&service]).await.id);
    }
    ids
}

async fn delete(app: &TestApp, id: &str) {
    let deleted = app.client().order_delete().id(id).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn orders_at_midnight_and_eight_leave_three_to_five_and_eleven_to_noon() {
    let app = spawn_app().await;
    book(&app, &["2030-01-01T00:00:00Z", "2030-01-01T08:00:00Z"]).await;

    let slots = free_slots(&app, "2030-01-01T00:00:00Z", "2030-01-01T12:00:00Z").await;

    assert_eq!(
        slots,
        listed(&[
            ("2030-01-01T03:00:00.000Z", "2030-01-01T05:00:00.000Z"),
            ("2030-01-01T11:00:00.000Z", "2030-01-01T12:00:00.000Z"),
        ])
    );
}

#[tokio::test]
async fn a_free_slot_is_bookable_at_both_ends_and_blocked_a_millisecond_beyond() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    book(&app, &["2030-01-01T00:00:00Z", "2030-01-01T08:00:00Z"]).await;

    for (datetime, status) in [
        ("2030-01-01T02:59:59.999Z", StatusCode::CONFLICT),
        ("2030-01-01T05:00:00.001Z", StatusCode::CONFLICT),
        ("2030-01-01T03:00:00.000Z", StatusCode::CREATED),
    ] {
        let created = app
            .http
            .post(app.url("/orders"))
            .json(&order_body(datetime, json!(1), &[&service]))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), status, "an order at {datetime}");
    }
    // 03:00 is taken now; the slot's other end, 05:00, is 2 h from it: blocked too.
    let slots = free_slots(&app, "2030-01-01T00:00:00Z", "2030-01-01T12:00:00Z").await;
    assert_eq!(
        slots,
        listed(&[("2030-01-01T11:00:00.000Z", "2030-01-01T12:00:00.000Z")])
    );
}

#[tokio::test]
async fn orders_six_hours_apart_leave_the_one_instant_between_and_three_hours_apart_none() {
    let app = spawn_app().await;
    let ids = book(&app, &["2030-01-01T03:00:00Z", "2030-01-01T09:00:00Z"]).await;

    let six_apart = free_slots(&app, "2030-01-01T01:00:00Z", "2030-01-01T11:00:00Z").await;
    delete(&app, &ids[1]).await;
    book(&app, &["2030-01-01T06:00:00Z"]).await;
    let three_apart = free_slots(&app, "2030-01-01T01:00:00Z", "2030-01-01T08:00:00Z").await;

    assert_eq!(
        six_apart,
        listed(&[("2030-01-01T06:00:00.000Z", "2030-01-01T06:00:00.000Z")])
    );
    // 03:00 blocks until 06:00, which the order at 06:00 blocks; that one blocks until 09:00.
    assert_eq!(three_apart, listed(&[]));
}

#[tokio::test]
async fn an_order_exactly_three_hours_before_from_leaves_from_free_and_a_millisecond_later_not() {
    let app = spawn_app().await;
    let from = "2030-01-01T12:00:00.000Z";
    let to = "2030-01-01T13:00:00.000Z";
    let ids = book(&app, &["2030-01-01T09:00:00.000Z"]).await;
    let exactly = free_slots(&app, from, to).await;
    delete(&app, &ids[0]).await;
    book(&app, &["2030-01-01T09:00:00.001Z"]).await;
    let just_under = free_slots(&app, from, to).await;

    assert_eq!(exactly, listed(&[(from, to)]));
    assert_eq!(just_under, listed(&[("2030-01-01T12:00:00.001Z", to)]));
}

#[tokio::test]
async fn orders_just_outside_the_window_block_its_edges_only_when_within_three_hours() {
    let app = spawn_app().await;
    let from = "2030-01-01T12:00:00.000Z";
    let to = "2030-01-01T20:00:00.000Z";
    let far = book(
        &app,
        &["2030-01-01T09:00:00.000Z", "2030-01-01T23:00:00.000Z"],
    )
    .await;
    let untouched = free_slots(&app, from, to).await;
    for id in &far {
        delete(&app, id).await;
    }
    book(
        &app,
        &["2030-01-01T09:00:00.001Z", "2030-01-01T22:59:59.999Z"],
    )
    .await;
    let trimmed = free_slots(&app, from, to).await;

    assert_eq!(untouched, listed(&[(from, to)]));
    assert_eq!(
        trimmed,
        listed(&[("2030-01-01T12:00:00.001Z", "2030-01-01T19:59:59.999Z")])
    );
}

#[tokio::test]
async fn an_empty_calendar_of_thirty_one_days_is_one_slot_the_whole_window() {
    let app = spawn_app().await;
    // Orders elsewhere in time change nothing.
    book(
        &app,
        &["2029-12-31T20:59:59.999Z", "2030-02-01T03:00:00.001Z"],
    )
    .await;

    let slots = free_slots(&app, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z").await;

    assert_eq!(
        slots,
        listed(&[("2030-01-01T00:00:00.000Z", "2030-02-01T00:00:00.000Z")])
    );
}

#[tokio::test]
async fn a_fully_booked_window_has_an_empty_list() {
    let app = spawn_app().await;
    book(
        &app,
        &[
            "2030-01-01T01:00:00.000Z",
            "2030-01-01T05:59:59.999Z",
            "2030-01-01T10:59:59.998Z",
        ],
    )
    .await;

    let slots = free_slots(&app, "2030-01-01T00:00:00Z", "2030-01-01T12:00:00Z").await;

    assert_eq!(slots, json!({ "free_slots": [] }));
}

#[tokio::test]
async fn a_window_of_one_instant_is_one_single_instant_slot_or_none() {
    let app = spawn_app().await;
    book(&app, &["2030-01-01T09:00:00.000Z"]).await;

    let free = free_slots(&app, "2030-01-01T12:00:00Z", "2030-01-01T12:00:00Z").await;
    let blocked = free_slots(&app, "2030-01-01T11:59:59.999Z", "2030-01-01T11:59:59.999Z").await;

    assert_eq!(
        free,
        listed(&[("2030-01-01T12:00:00.000Z", "2030-01-01T12:00:00.000Z")])
    );
    assert_eq!(blocked, listed(&[]));
}

#[tokio::test]
async fn sub_millisecond_digits_are_truncated_and_offsets_shown_in_utc() {
    let app = spawn_app().await;

    let slots = free_slots(
        &app,
        "2030-01-01T03:00:00.000999Z",
        "2030-01-01T14:00:00.999999+02:00",
    )
    .await;

    assert_eq!(
        slots,
        listed(&[("2030-01-01T03:00:00.000Z", "2030-01-01T12:00:00.999Z")])
    );
}

/// Milliseconds since the epoch.
fn millis(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_millis()
}

fn instant(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap()
}

/// The free slots of `[from, to]` (in milliseconds) by brute force: every millisecond of the
/// window is tried against the rule (at least 3 hours from every order), and runs of free
/// ones are the slots.
fn brute_force_slots(from: i64, to: i64, orders: &[i64]) -> Vec<(i64, i64)> {
    const CLEARANCE: i64 = 3 * 60 * 60 * 1000;
    let mut slots: Vec<(i64, i64)> = Vec::new();
    let mut run_start = None;
    for ms in from..=to {
        let free = orders.iter().all(|order| (ms - order).abs() >= CLEARANCE);
        match (free, run_start) {
            (true, None) => run_start = Some(ms),
            (false, Some(start)) => {
                slots.push((start, ms - 1));
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        slots.push((start, to));
    }
    slots
}

/// Random calendars, each in a stretch of time of its own, compared with the brute force
/// over windows of up to 9 hours. Candidate orders fall near the window and its edges, and
/// some exactly 3 or 6 hours from another order or from an edge; those the 3-hour rule
/// refuses are simply not booked, so each calendar is what the service really holds.
#[tokio::test]
async fn random_calendars_agree_with_a_brute_force_over_every_millisecond() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    // A seed whose calendars cover the cases below (checked at the end).
    let mut rng = StdRng::seed_from_u64(3);
    // What the calendars covered: (none free, several slots, a single-instant slot).
    let mut covered = (false, false, false);
    let hour = 60 * 60 * 1000;
    for calendar in 0..10 {
        let base = millis(at("2031-01-01T00:00:00Z")) + calendar * 10 * 24 * hour;
        let from = base + rng.random_range(0..hour);
        let to = from + rng.random_range(0..=9 * hour);
        let mut booked: Vec<i64> = Vec::new();
        for _ in 0..rng.random_range(0..6) {
            let anchor = *[from, to]
                .iter()
                .chain(booked.iter())
                .nth(rng.random_range(0..2 + booked.len()))
                .unwrap();
            let candidate = match rng.random_range(0..4) {
                0 => anchor - 3 * hour,
                1 => anchor + 3 * hour,
                2 => anchor + 6 * hour * if rng.random_bool(0.5) { 1 } else { -1 },
                _ => rng.random_range(from - 4 * hour..=to + 4 * hour),
            };
            let datetime = instant(candidate).to_rfc3339_opts(SecondsFormat::Millis, true);
            let created = app
                .http
                .post(app.url("/orders"))
                .json(&order_body(&datetime, json!(1), &[&service]))
                .send()
                .await
                .unwrap();
            match created.status() {
                StatusCode::CREATED => booked.push(candidate),
                StatusCode::CONFLICT => {}
                other => panic!("an order at {datetime}: {other}"),
            }
        }

        let answer = app
            .client()
            .free_slots_list()
            .from(instant(from))
            .to(instant(to))
            .send()
            .await
            .unwrap()
            .into_inner();

        let served: Vec<(i64, i64)> = answer
            .free_slots
            .iter()
            .map(|slot| (millis(slot.start), millis(slot.end)))
            .collect();
        assert_eq!(
            served,
            brute_force_slots(from, to, &booked),
            "calendar {calendar}: window {} to {}, orders {:?}",
            instant(from),
            instant(to),
            booked.iter().map(|&t| instant(t)).collect::<Vec<_>>()
        );
        covered.0 |= served.is_empty();
        covered.1 |= served.len() > 1;
        covered.2 |= served.iter().any(|(start, end)| start == end);
    }
    assert_eq!(
        covered,
        (true, true, true),
        "the calendars include a fully booked window, one of several slots, and a slot of one instant"
    );
}

#[tokio::test]
async fn a_missing_reversed_too_long_repeated_or_malformed_window_is_invalid_parameter() {
    let app = spawn_app().await;
    let cases = [
        ("to=2030-01-02T00:00:00Z", "from: is required"),
        ("from=2030-01-01T00:00:00Z", "to: is required"),
        ("", "from: is required"),
        (
            "from=2030-01-02T00:00:00Z&to=2030-01-01T23:59:59.999Z",
            "from: must not be later than to",
        ),
        (
            "from=2030-01-01T00:00:00Z&to=2030-02-01T00:00:00.001Z",
            "to: must be at most 31 days after from",
        ),
        (
            "from=2030-01-01T00:00:00Z&from=2030-01-01T01:00:00Z&to=2030-01-02T00:00:00Z",
            "from: given more than once; send each query parameter once",
        ),
        (
            "from=yesterday&to=2030-01-02T00:00:00Z",
            "from: must be an RFC 3339 date-time with a UTC offset, like 2022-11-01T11:11:11.111Z",
        ),
    ];
    for (query, detail) in cases {
        let response = app.get(&format!("/free-slots?{query}")).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
        assert_eq!(problem["detail"], detail, "?{query}");
    }
    // Exactly 31 days is allowed.
    free_slots(&app, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z").await;
}

#[tokio::test]
async fn free_slots_need_a_key_with_orders_read() {
    let app = spawn_app().await;
    let path = "/free-slots?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z";
    let writer = http_client_with_key(&app.create_key("writer", &[Scope::OrdersWrite]).await);
    let reader = http_client_with_key(&app.create_key("reader", &[Scope::OrdersRead]).await);

    let anonymous = app.anonymous.get(app.url(path)).send().await.unwrap();
    let challenge = header(anonymous.headers(), "www-authenticate");
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let refused = writer.get(app.url(path)).send().await.unwrap();
    let problem = assert_problem(refused, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("orders:read"),
        "{problem}"
    );
    let allowed = reader.get(app.url(path)).send().await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_route_is_counted_as_free_slots_answers_head_and_refuses_post_with_allow() {
    let app = spawn_app().await;
    let path = "/free-slots?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z";

    let head = app.http.head(app.url(path)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.headers().contains_key("x-request-id"));
    assert_eq!(head.text().await.unwrap(), "", "HEAD has no body");
    let post = app
        .http
        .request(Method::POST, app.url(path))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(post.headers(), "allow"), "GET, HEAD");
    assert_problem(post, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").await;
    app.get(path).await.error_for_status().unwrap();

    let metrics = app
        .anonymous
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |method: &str, status: &str| {
        metrics.lines().any(|line| {
            line.starts_with("http_server_request_duration_seconds_count{")
                && line.contains(&format!("http_request_method=\"{method}\""))
                && line.contains("http_route=\"/free-slots\"")
                && line.contains(&format!("http_response_status_code=\"{status}\""))
        })
    };
    assert!(counted("GET", "200"), "{metrics}");
    assert!(counted("POST", "405"), "{metrics}");
}

/// Orders every 3 hours for about 68 years, inserted in one statement.
const CALENDAR_ORDERS: i64 = 200_000;

#[tokio::test]
async fn on_two_hundred_thousand_orders_the_window_is_read_on_the_index() {
    let app = spawn_app().await;
    let client = app.insert_bulk_orders(CALENDAR_ORDERS).await;
    client.execute("ANALYZE orders", &[]).await.unwrap();
    let from = at("2030-01-01T00:00:00Z");
    let to = from + Duration::days(31);

    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {ORDERS_NEAR_WINDOW}"), &[&from, &to])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index") && plan.contains("orders_scheduled_at_id"),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "{plan}");

    // Orders exactly 3 hours apart block everything between them.
    let slots = free_slots(&app, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z").await;
    assert_eq!(slots, listed(&[]));
    // Past the last order (2000-01-01 + 600000 h, in 2068), the calendar is free.
    let last = at("2000-01-01T00:00:00Z") + Duration::hours(3 * CALENDAR_ORDERS);
    let after = (last + Duration::hours(3)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let end = (last + Duration::days(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let free = free_slots(&app, &(last - Duration::hours(1)).to_rfc3339(), &end).await;
    assert_eq!(free, listed(&[(&after, &end)]));
}
