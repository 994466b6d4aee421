//! The change feed's retention: events past it are purged oldest first, and a cursor from
//! before what is kept is 410 `CURSOR_EXPIRED`, not a silent gap.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    events::{feed_page, head, read_events},
    helpers::{TestApp, assert_problem, spawn_app, spawn_app_with},
};
use orders::storage;

/// Makes the events of the services `ids` look `days` old.
async fn age_events(app: &TestApp, ids: &[&str], days: i32) {
    let ids: Vec<i64> = ids.iter().map(|id| id.parse().unwrap()).collect();
    let client = app.pool.get().await.unwrap();
    let aged = client
        .execute(
            "UPDATE events SET occurred_at = now() - make_interval(days => $2)
             WHERE subject_id = ANY($1) AND type LIKE 'service.%'",
            &[&ids, &days],
        )
        .await
        .unwrap();
    assert_eq!(aged, ids.len() as u64);
}

fn subjects(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["subject"]["id"].as_str().unwrap())
        .collect()
}

/// The seven-day default, as a purge of this test's own runs it.
const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[tokio::test]
async fn purged_cursors_are_410_the_horizon_reads_on_and_the_oldest_kept_comes_first() {
    // Arrange: three services; the first two events are past the retention period.
    let app = spawn_app().await;
    let start = head(&app).await;
    let first = app.create_service("Wash").await;
    let second = app.create_service("Polish").await;
    let third = app.create_service("Inspection").await;
    let (events, _) = read_events(&app, Some(&start), 3, 10).await;
    let after_first = events[0]["id"].as_str().unwrap().to_owned();
    let after_second = events[1]["id"].as_str().unwrap().to_owned();
    age_events(&app, &[&first, &second], 8).await;

    // Act: the purge the background task runs.
    let purged = storage::events::purge_expired_batch(&app.pool, WEEK)
        .await
        .unwrap();

    // Assert
    assert_eq!(purged, 2);
    for expired in [&start, &after_first] {
        let response = app.get(&format!("/events?after={expired}")).await;
        let problem = assert_problem(response, StatusCode::GONE, "CURSOR_EXPIRED").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("after: ") && detail.contains("after=now"),
            "{detail}"
        );
    }
    // The last event purged is where the feed now begins: its cursor reads on.
    let page = feed_page(&app, Some(&after_second), 10).await;
    assert_eq!(
        subjects(page["events"].as_array().unwrap()),
        [third.as_str()]
    );
    let oldest = feed_page(&app, None, 10).await;
    assert_eq!(
        oldest, page,
        "without `after`, the feed starts at the oldest kept"
    );
    // A consumer told to start over does as the detail says.
    let fresh = feed_page(&app, Some("now"), 10).await;
    assert_eq!(fresh["events"], json!([]));
    assert_eq!(fresh["next_cursor"], page["next_cursor"]);
    let _ = second;
}

#[tokio::test]
async fn only_the_oldest_events_are_purged_never_one_after_a_younger_event() {
    let app = spawn_app().await;
    let start = head(&app).await;
    let old = app.create_service("Wash").await;
    let young = app.create_service("Polish").await;
    let old_again = app.create_service("Inspection").await;
    let (events, _) = read_events(&app, Some(&start), 3, 10).await;
    age_events(&app, &[&old, &old_again], 8).await;

    let purged = storage::events::purge_expired_batch(&app.pool, WEEK)
        .await
        .unwrap();

    // The feed stays a suffix of what it was: nothing after the young event goes, or a
    // consumer could read past a hole.
    assert_eq!(purged, 1);
    let kept = feed_page(&app, None, 10).await;
    assert_eq!(
        subjects(kept["events"].as_array().unwrap()),
        [young.as_str(), old_again.as_str()]
    );
    let after_old = events[0]["id"].as_str().unwrap();
    assert_eq!(feed_page(&app, Some(after_old), 10).await, kept);
    let before = app.get(&format!("/events?after={start}")).await;
    assert_problem(before, StatusCode::GONE, "CURSOR_EXPIRED").await;
}

#[tokio::test]
async fn the_background_purge_keeps_events_for_the_configured_retention() {
    // Arrange: a retention of two seconds, so the purge (every second then) is seen at work.
    let retention = Duration::from_secs(2);
    let app = spawn_app_with(|settings| {
        settings.db_pool_size = 4;
        settings.event_retention = retention;
    })
    .await;
    let start = head(&app).await;
    let service = app.create_service("Wash").await;
    let created = Instant::now();
    let (events, _) = read_events(&app, Some(&start), 1, 10).await;
    assert_eq!(subjects(&events), [service.as_str()]);

    // Act: wait for the purge.
    let deadline = created + retention + Duration::from_secs(20);
    let gone_after = loop {
        let response = app.get(&format!("/events?after={start}")).await;
        if response.status() == StatusCode::GONE {
            break created.elapsed();
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(Instant::now() < deadline, "the event was never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Assert: not before its time, and the feed still reads on from the horizon.
    assert!(gone_after >= retention, "purged after {gone_after:?}");
    let oldest = feed_page(&app, None, 10).await;
    assert_eq!(oldest["events"], json!([]));
    assert_eq!(oldest["next_cursor"], events[0]["id"]);
}
