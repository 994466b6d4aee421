//! The change feed: one event per committed change, as `GET` showed the record, in an order
//! no later commit can break.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use orders::{domain::ServiceName, storage};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TEST_KEY_NAME, TestApp, assert_problem, order_body, spawn_app, spawn_app_with,
};

/// Reads the feed after `cursor` (from the oldest event when `None`) until `count` events
/// have come, page by page of `limit`; returns them and the last cursor. Waits for events of
/// writes still committing, up to a deadline: the feed hands out an event only once every
/// transaction older than its own has ended, anywhere in the cluster.
pub async fn read_events(
    app: &TestApp,
    cursor: Option<&str>,
    count: usize,
    limit: usize,
) -> (Vec<Value>, String) {
    let mut cursor = cursor.map(str::to_owned);
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = feed_page(app, cursor.as_deref(), limit).await;
        let batch = page["events"].as_array().unwrap();
        assert!(batch.len() <= limit, "a page holds at most `limit` events");
        events.extend(batch.iter().cloned());
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if events.len() >= count {
            assert_eq!(events.len(), count, "more events than changes: {events:#?}");
            return (events, cursor.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events came: {events:#?}",
            events.len()
        );
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn feed_page(app: &TestApp, after: Option<&str>, limit: usize) -> Value {
    let path = match after {
        Some(after) => format!("/events?after={after}&limit={limit}"),
        None => format!("/events?limit={limit}"),
    };
    let response = app.get(&path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

/// The cursor at the feed's head now: what a consumer that wants only new events starts from.
pub async fn head(app: &TestApp) -> String {
    let page = feed_page(app, Some("now"), 100).await;
    assert_eq!(page["events"], json!([]), "after=now gives no events");
    page["next_cursor"].as_str().unwrap().to_owned()
}

/// GET `path`: its JSON body with its ETag, as the feed's `data` shows a record.
async fn as_get_shows_it(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let mut body: Value = response.json().await.unwrap();
    body["etag"] = json!(etag);
    body
}

fn summary(event: &Value) -> (String, String, String) {
    let text = |value: &Value| value.as_str().unwrap().to_owned();
    (
        text(&event["type"]),
        text(&event["subject"]["kind"]),
        text(&event["subject"]["id"]),
    )
}

#[tokio::test]
async fn each_change_is_one_event_carrying_the_record_as_get_showed_it() {
    // Arrange
    let app = spawn_app().await;
    let start = head(&app).await;

    // Act: a service's and an order's whole lives, with what GET showed after each change.
    let service = app.create_service("Calibration").await;
    let service_created = as_get_shows_it(&app, &format!("/services/{service}")).await;
    let order = app
        .create_order("2031-05-01T08:00:00.000Z", 10.0, &[&service])
        .await
        .id;
    let order_path = format!("/orders/{order}");
    let order_created = as_get_shows_it(&app, &order_path).await;
    let replaced = app
        .http
        .put(app.url(&order_path))
        .json(&order_body(
            "2031-05-01T09:30:00.000Z",
            json!(12.5),
            &[&service],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    let order_updated = as_get_shows_it(&app, &order_path).await;
    let renamed = app
        .http
        .put(app.url(&format!("/services/{service}")))
        .json(&json!({"name": "Recalibration"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let service_updated = as_get_shows_it(&app, &format!("/services/{service}")).await;
    let order_before_delete = as_get_shows_it(&app, &order_path).await;
    let deleted = app.http.delete(app.url(&order_path)).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let service_before_delete = as_get_shows_it(&app, &format!("/services/{service}")).await;
    let deleted = app
        .http
        .delete(app.url(&format!("/services/{service}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // Assert
    let (events, _) = read_events(&app, Some(&start), 6, 100).await;
    let expected = [
        ("service.created", "service", &service, &service_created),
        ("order.created", "order", &order, &order_created),
        ("order.updated", "order", &order, &order_updated),
        ("service.updated", "service", &service, &service_updated),
        ("order.deleted", "order", &order, &order_before_delete),
        (
            "service.deleted",
            "service",
            &service,
            &service_before_delete,
        ),
    ];
    for (event, (kind, subject_kind, subject_id, data)) in events.iter().zip(expected) {
        assert_eq!(
            summary(event),
            (kind.to_owned(), subject_kind.to_owned(), subject_id.clone())
        );
        assert_eq!(
            &event["data"], data,
            "{kind}: data is the record as GET showed it"
        );
        assert_eq!(event["actor"], TEST_KEY_NAME);
        let occurred_at = event["occurred_at"].as_str().unwrap();
        assert!(
            occurred_at.len() == 24 && occurred_at.ends_with('Z'),
            "UTC to the millisecond: {occurred_at}"
        );
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6, "event ids are unique");
    // An event's id is a cursor: reading after it gives the events after it.
    let (after_second, _) = read_events(&app, Some(ids[1]), 4, 100).await;
    assert_eq!(after_second, events[2..]);
}

#[tokio::test]
async fn writes_that_fail_leave_no_event() {
    // Arrange
    let app = spawn_app().await;
    let service = app.create_service("Cleaning").await;
    let order = app
        .create_order("2031-06-01T08:00:00.000Z", 10.0, &[&service])
        .await
        .id;
    // After the two creates' events: `after=now` could be before them, as long as a transaction
    // elsewhere in the cluster that began before them is still open.
    let (_, start) = read_events(&app, None, 2, 100).await;

    // Act: a clash with the 3-hour rule, an unknown service, a stale If-Match, a duplicate
    // name, and a delete of a service in use.
    let clash = app
        .post_json(
            "/orders",
            &order_body("2031-06-01T09:00:00.000Z", json!(1), &[&service]),
        )
        .await;
    assert_eq!(clash.status(), StatusCode::CONFLICT);
    let unknown = app
        .post_json(
            "/orders",
            &order_body("2031-07-01T09:00:00.000Z", json!(1), &["999999"]),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let stale = app
        .http
        .put(app.url(&format!("/orders/{order}")))
        .header("if-match", "\"1.0\"")
        .json(&order_body(
            "2031-06-01T12:00:00.000Z",
            json!(1),
            &[&service],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let duplicate = app
        .post_json("/services", &json!({"name": "cleaning"}))
        .await;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    let in_use = app
        .http
        .delete(app.url(&format!("/services/{service}")))
        .send()
        .await
        .unwrap();
    assert_eq!(in_use.status(), StatusCode::CONFLICT);
    // One change that succeeds, to know when the feed has caught up with the others.
    let marker = app.create_service("Marker").await;

    // Assert
    let (events, _) = read_events(&app, Some(&start), 1, 100).await;
    assert_eq!(
        summary(&events[0]),
        ("service.created".to_owned(), "service".to_owned(), marker)
    );
}

#[tokio::test]
async fn the_feed_starts_at_the_oldest_event_and_pages_through_every_one() {
    // Arrange: the sample data's six creates, then five more.
    let app = spawn_app().await;
    storage::seed::load(&app.pool).await.unwrap();
    for index in 0..5 {
        app.create_service(&format!("Paged {index}")).await;
    }

    // Act
    let (events, last) = read_events(&app, None, 11, 2).await;

    // Assert
    let kinds: Vec<String> = events.iter().map(|e| summary(e).0).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "service.created").count(), 8);
    assert_eq!(kinds.iter().filter(|k| *k == "order.created").count(), 3);
    assert_eq!(events[0]["actor"], "seed", "the sample data comes first");
    // The last cursor is the head: nothing after it, and after=now points there too.
    let after_last = feed_page(&app, Some(&last), 100).await;
    assert_eq!(after_last["events"], json!([]));
    assert_eq!(
        after_last["next_cursor"],
        json!(last),
        "an empty page keeps the cursor"
    );
    assert_eq!(head(&app).await, last);
}

#[tokio::test]
async fn cursors_the_api_never_issued_and_bad_limits_are_refused() {
    let app = spawn_app().await;
    let forged = base64_url("e1:999999999:1");
    for after in ["garbage", "bm93", forged.as_str(), "ZTE6LTE6Mg"] {
        let response = app.get(&format!("/events?after={after}")).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
        assert!(
            problem["detail"].as_str().unwrap().starts_with("after: "),
            "{problem}"
        );
    }
    for limit in ["0", "-1", "x"] {
        let response = app.get(&format!("/events?limit={limit}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
    }
    let response = app.get("/events?after=now&after=now").await;
    assert_problem(response, StatusCode::BAD_REQUEST, "INVALID_PARAMETER").await;
    let anonymous = app.anonymous.get(app.url("/events")).send().await.unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
}

fn base64_url(text: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn an_event_committed_late_with_an_older_transaction_is_not_skipped() {
    // Arrange: a transaction that began writing before another write, and commits after it.
    let app = spawn_app().await;
    let start = head(&app).await;
    let mut client = app.pool.get().await.unwrap();
    let early = client.transaction().await.unwrap();
    early
        .execute("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();
    let late = app.create_service("Committed first").await;

    // Act and assert: while the older transaction runs, the newer change is held back, so
    // that no cursor can pass the place where the older one's event will appear.
    let held = feed_page(&app, Some(&start), 100).await;
    assert_eq!(held["events"], json!([]), "{held}");
    assert_eq!(held["next_cursor"], json!(start));
    let name = ServiceName::parse("Committed second").unwrap();
    let early_record = storage::services::insert(&early, &name, "tester")
        .await
        .unwrap();
    early.commit().await.unwrap();
    let (events, _) = read_events(&app, Some(&start), 2, 100).await;
    let ids: Vec<String> = events.iter().map(|e| summary(e).2).collect();
    assert_eq!(ids, [early_record.id.to_string(), late]);
}

/// A random but reproducible choice.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        // xorshift64*: enough for spreading test traffic.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % sides
    }
}

#[tokio::test]
async fn under_concurrent_writers_the_feed_rebuilds_the_database_exactly() {
    // Arrange: services to book and rename, and a reader tailing the feed from the start.
    let app = spawn_app_with(|settings| settings.db_pool_size = 16).await;
    let mut services = Vec::new();
    for index in 0..4 {
        services.push(app.create_service(&format!("Shared {index}")).await);
    }
    let (marker, marker_created) = tokio::sync::watch::channel(None);
    let reader = {
        let (address, http) = (app.address.clone(), app.http.clone());
        tokio::spawn(async move { tail(&address, &http, marker_created).await })
    };

    // Act: 32 writers, each creating, replacing and deleting orders on a shared calendar and
    // renaming the shared services, racing each other.
    let mut writers = Vec::new();
    for writer in 0..32u64 {
        let (address, http, services) = (app.address.clone(), app.http.clone(), services.clone());
        writers.push(tokio::spawn(async move {
            let mut dice = Dice(writer * 7919 + 1);
            let mut mine: Vec<String> = Vec::new();
            let mut changes = 0;
            for step in 0..12 {
                let service = &services[dice.roll(services.len() as u64) as usize];
                let hour = dice.roll(24 * 20);
                let datetime = chrono::DateTime::parse_from_rfc3339("2032-01-01T00:00:00Z")
                    .unwrap()
                    + chrono::Duration::hours(hour as i64);
                let body = order_body(&datetime.to_rfc3339(), json!(step), &[service]);
                let url = |path: &str| format!("{address}{path}");
                match (dice.roll(4), mine.last()) {
                    (0, Some(order)) => {
                        let response = http.put(url(&format!("/orders/{order}"))).json(&body);
                        let status = response.send().await.unwrap().status();
                        assert!(status == StatusCode::OK || status == StatusCode::CONFLICT);
                        changes += usize::from(status == StatusCode::OK);
                    }
                    (1, Some(_)) => {
                        let order = mine.pop().unwrap();
                        let response = http.delete(url(&format!("/orders/{order}")));
                        assert_eq!(
                            response.send().await.unwrap().status(),
                            StatusCode::NO_CONTENT
                        );
                        changes += 1;
                    }
                    (2, _) => {
                        let name = json!({"name": format!("Shared {service} by {writer}.{step}")});
                        let response = http.put(url(&format!("/services/{service}"))).json(&name);
                        assert_eq!(response.send().await.unwrap().status(), StatusCode::OK);
                        changes += 1;
                    }
                    _ => {
                        let response = http.post(url("/orders")).json(&body).send().await.unwrap();
                        match response.status() {
                            StatusCode::CREATED => {
                                let order: Value = response.json().await.unwrap();
                                mine.push(order["id"].as_str().unwrap().to_owned());
                                changes += 1;
                            }
                            status => assert_eq!(status, StatusCode::CONFLICT),
                        }
                    }
                }
            }
            changes
        }));
    }
    let mut changes = services.len() + 1; // the shared services, and the marker below
    for writer in writers {
        changes += writer.await.unwrap();
    }
    marker.send_replace(Some(app.create_service("Marker").await));
    let rebuilt = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader caught up")
        .unwrap();

    // Assert: the copies rebuilt from the feed are what the database holds.
    let listed: Value = app
        .get("/orders?page_size=1000")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed.get("next_page_token").is_none(),
        "one page holds them all"
    );
    let database_orders: BTreeMap<String, Value> = listed["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| (order["id"].as_str().unwrap().to_owned(), order.clone()))
        .collect();
    let listed: Value = app
        .get("/services?page_size=1000")
        .await
        .json()
        .await
        .unwrap();
    let database_services: BTreeMap<String, Value> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|service| {
            (
                service["id"].as_str().unwrap().to_owned(),
                service["name"].clone(),
            )
        })
        .collect();
    assert_eq!(
        database_services.len(),
        5,
        "the shared services and the marker"
    );
    assert_eq!(rebuilt.service_names(), database_services);
    assert_eq!(rebuilt.orders_with_current_names(), database_orders);
    assert_eq!(
        rebuilt.events, changes,
        "one event per change that succeeded"
    );
    assert!(changes > 200, "enough traffic: {changes} changes");
}

/// Copies of orders and services kept from the feed, as a consumer keeps them.
#[derive(Default)]
struct Copies {
    orders: BTreeMap<String, Value>,
    services: BTreeMap<String, Value>,
    /// The last version of each record applied, to check that each record's events come in
    /// the order its changes took effect.
    etags: HashMap<(String, String), String>,
    events: usize,
}

impl Copies {
    fn apply(&mut self, event: &Value) {
        self.events += 1;
        let (kind, subject_kind, id) = summary(event);
        let mut data = event["data"].clone();
        let etag = data.as_object_mut().unwrap().remove("etag").unwrap();
        let version = version_of(&subject_kind, etag.as_str().unwrap());
        let previous = self
            .etags
            .insert((subject_kind.clone(), id.clone()), etag.to_string());
        if let Some(previous) = previous {
            let previous = version_of(
                &subject_kind,
                serde_json::from_str::<String>(&previous).unwrap().as_str(),
            );
            assert!(
                previous <= version,
                "{subject_kind} {id}: version {version:?} after {previous:?}"
            );
        }
        let copies = match subject_kind.as_str() {
            "order" => &mut self.orders,
            _ => &mut self.services,
        };
        if kind.ends_with(".deleted") {
            assert!(copies.remove(&id).is_some(), "{kind} of {id} with no copy");
        } else {
            if kind.ends_with(".created") {
                assert!(!copies.contains_key(&id), "{kind} of {id} twice");
            }
            copies.insert(id, data);
        }
    }

    fn service_names(&self) -> BTreeMap<String, Value> {
        self.services
            .iter()
            .map(|(id, service)| (id.clone(), service["name"].clone()))
            .collect()
    }

    /// The orders, each booked service showing the service's current name, as a consumer
    /// applies a rename to the orders that book the service.
    fn orders_with_current_names(&self) -> BTreeMap<String, Value> {
        let mut orders = self.orders.clone();
        for order in orders.values_mut() {
            for service in order["services"].as_array_mut().unwrap() {
                let id = service["id"].as_str().unwrap();
                service["name"] = self.services[id]["name"].clone();
            }
        }
        orders
    }
}

/// An ETag's versions as numbers, comparable within one record.
fn version_of(kind: &str, etag: &str) -> (i64, i64) {
    let opaque = etag.trim_matches('"');
    match kind {
        "order" => {
            let (order, _services) = opaque.split_once('.').unwrap();
            // An order's own version orders its events; a rename of one of its services
            // changes its ETag without an event of its own.
            (order.parse().unwrap(), 0)
        }
        _ => (opaque.parse().unwrap(), 0),
    }
}

/// Tails the feed from its start until it has applied the event of the service `marker`
/// names, created once every writer was done: its transaction began after all of theirs
/// ended, so the feed hands it out after all of their events, and nothing follows it.
async fn tail(
    address: &str,
    http: &reqwest::Client,
    mut marker: tokio::sync::watch::Receiver<Option<String>>,
) -> Copies {
    let mut copies = Copies::default();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(after) => format!("{address}/events?after={after}&limit=50"),
            None => format!("{address}/events?limit=50"),
        };
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        for event in events {
            copies.apply(event);
        }
        // The marker's event may come before the test learns the marker's id (the reader can
        // fetch it between the create's commit and the send), so look for it among the
        // copies, not only in this page.
        let marker = marker.borrow_and_update().clone();
        if marker.is_some_and(|marker| copies.services.contains_key(&marker)) {
            return copies;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn the_generated_client_tails_the_feed_and_tells_the_event_types_apart() {
    // Arrange
    let app = spawn_app().await;
    let client = app.client();
    let head = client.event_list().after("now").send().await.unwrap();
    let mut cursor = head.into_inner().next_cursor;
    let service = app.create_service("Tailed").await;
    let order = app
        .create_order("2031-08-01T08:00:00.000Z", 10.0, &[&service])
        .await;

    // Act: tail until both events came, as a consumer would.
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.len() < 2 && Instant::now() < deadline {
        let page = client
            .event_list()
            .after(cursor.as_str())
            .limit(1u64)
            .send()
            .await
            .unwrap()
            .into_inner();
        cursor = page.next_cursor;
        events.extend(page.events);
    }

    // Assert: each event decodes as its own type, with its record.
    assert_eq!(events.len(), 2, "{events:#?}");
    use orders_client::types::Event;
    let Event::ServiceCreatedEvent(created_service) = &events[0] else {
        panic!("a service.created event: {:#?}", events[0]);
    };
    assert_eq!(created_service.data.id, service);
    assert_eq!(created_service.data.name, "Tailed");
    let Event::OrderCreatedEvent(created_order) = &events[1] else {
        panic!("an order.created event: {:#?}", events[1]);
    };
    assert_eq!(created_order.data.id, order.id);
    assert_eq!(created_order.subject.id, order.id);
    assert_eq!(created_order.data.services[0].name, "Tailed");
}

/// How many events the scale test's feed holds.
const MANY_EVENTS: i64 = 200_000;

#[tokio::test]
async fn on_two_hundred_thousand_events_a_page_reads_a_few_blocks_on_the_index() {
    // Arrange: one real event, copied into a feed of 200,000 events of one old transaction.
    let app = spawn_app().await;
    app.create_service("Inspection").await;
    let (events, _) = read_events(&app, None, 1, 10).await;
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO events (tx, type, actor, subject_id, data)
             SELECT e.tx, e.type, e.actor, e.subject_id, e.data
             FROM events e, generate_series(2, $1::bigint)",
            &[&MANY_EVENTS],
        )
        .await
        .unwrap();
    client.batch_execute("ANALYZE events").await.unwrap();
    let middle: i64 = client
        .query_one(
            "SELECT id FROM events ORDER BY id OFFSET $1 LIMIT 1",
            &[&(MANY_EVENTS / 2)],
        )
        .await
        .unwrap()
        .get(0);
    let tx: i64 = client
        .query_one("SELECT tx FROM events LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);

    // Act and assert: from the oldest, after a cursor in the middle, and at the head, a page of
    // 100 touches a few dozen blocks, not the table, and is cheap enough never to be compiled.
    client
        .batch_execute(&format!(
            "PREPARE read_page (text, bigint, bigint, bigint) AS {}",
            storage::events::READ_PAGE
        ))
        .await
        .unwrap();
    for (mode, after_id) in [("oldest", 0), ("after", middle), ("now", 0)] {
        let after_tx = if mode == "after" { tx } else { 0 };
        let explain = format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE read_page('{mode}', {after_tx}, {after_id}, 100)"
        );
        let plan: Value = client
            .simple_query(&explain)
            .await
            .unwrap()
            .iter()
            .find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(serde_json::from_str(row.get(0).unwrap()).unwrap())
                }
                _ => None,
            })
            .expect("a plan");
        let top = &plan[0];
        let blocks = top["Plan"]["Shared Hit Blocks"].as_i64().unwrap()
            + top["Plan"]["Shared Read Blocks"].as_i64().unwrap();
        assert!(blocks < 100, "{mode}: {blocks} blocks: {plan:#}");
        assert!(top.get("JIT").is_none(), "{mode}: compiled: {plan:#}");
    }
    let page = feed_page(&app, None, 100).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 100);
    assert_eq!(page["events"][0], events[0]);
}
