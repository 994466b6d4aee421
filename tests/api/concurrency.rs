//! Racing writers: the database decides, exactly one wins.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{order_body, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_on_overlapping_times_give_exactly_one_201() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;

    // 32 creates, each within 3 hours of every other (all inside one 2-hour span).
    let creates = (0..32).map(|minute| {
        let body = order_body(
            &format!("2022-11-01T12:{:02}:00Z", minute * 3 / 2),
            json!(1),
            &[&service],
        );
        let app = &app;
        async move { app.post_json("/orders", &body).await.status() }
    });
    let statuses = join_all(creates).await;

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 31), "{statuses:?}");
    let list: serde_json::Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_updates_onto_one_time_give_one_200_and_one_409() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let first = app
        .create_order("2022-11-01T00:00:00Z", json!(1), &[&service])
        .await;
    let second = app
        .create_order("2022-11-02T00:00:00Z", json!(1), &[&service])
        .await;
    let target = order_body("2022-11-05T12:00:00Z", json!(1), &[&service]);

    let updates = [&first, &second].map(|order| {
        let path = format!("/orders/{}", order["id"].as_str().unwrap());
        let (app, target) = (&app, &target);
        async move { app.put_json(&path, target).await.status() }
    });
    let mut statuses = join_all(updates).await;
    statuses.sort();

    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
}
