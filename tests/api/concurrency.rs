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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_replaces_of_one_order_leave_exactly_one_writers_services() {
    let app = spawn_app().await;
    let mut services = Vec::new();
    for index in 0..8 {
        services.push(app.create_service(&format!("Service {index}")).await);
    }
    let order = app
        .create_order("2022-11-01T00:00:00Z", json!(1), &[&services[0]])
        .await;
    let path = format!("/orders/{}", order["id"].as_str().unwrap());

    for round in 0..5 {
        // Each writer replaces the whole order with a service list of its own.
        let replaces = services.iter().enumerate().map(|(writer, service)| {
            let body = order_body(
                &format!("2022-11-01T00:{round:02}:00Z"),
                json!(writer),
                &[service],
            );
            let (app, path) = (&app, &path);
            async move {
                let response = app.put_json(path, &body).await;
                assert_eq!(response.status(), StatusCode::OK);
                response.json::<serde_json::Value>().await.unwrap()
            }
        });
        let written = join_all(replaces).await;

        // The order now is exactly what one writer wrote: its fee and its one service.
        let now: serde_json::Value = app.get(&path).await.json().await.unwrap();
        let winner = &written[now["totalfee"].as_u64().unwrap() as usize];
        assert_eq!(
            &now, winner,
            "round {round}: the stored order is one writer's whole replace"
        );
        assert_eq!(
            now["services"].as_array().unwrap().len(),
            1,
            "round {round}: {now}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_orders_racing_onto_one_time_give_one_200_and_the_rest_409() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let mut paths = Vec::new();
    for day in 1..=16 {
        let order = app
            .create_order(
                &format!("2022-12-{day:02}T00:00:00Z"),
                json!(1),
                &[&service],
            )
            .await;
        paths.push(format!("/orders/{}", order["id"].as_str().unwrap()));
    }

    for round in 0..3 {
        // Racing updates onto overlapping windows can deadlock inside PostgreSQL; the service
        // retries those, so every answer is still a 200 or a 409, never a 500.
        let target = order_body(
            &format!("2023-01-0{}T12:00:00Z", round + 1),
            json!(1),
            &[&service],
        );
        let updates = paths.iter().map(|path| {
            let (app, target) = (&app, &target);
            async move { app.put_json(path, target).await.status() }
        });
        let statuses = join_all(updates).await;

        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let conflicts = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((ok, conflicts), (1, 15), "round {round}: {statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_created_during_a_rename_of_its_service_shows_the_new_name_under_its_etag() {
    let app = spawn_app().await;
    let service = app.create_service("Old name").await;
    let service_id: i64 = service.parse().unwrap();

    // A rename caught half way: the service row is locked and renamed, not yet committed
    // (the same first steps the service's own rename takes).
    let mut client = app.pool.get().await.unwrap();
    let rename = client.transaction().await.unwrap();
    rename
        .execute(
            "SELECT 1 FROM services WHERE id = $1 FOR UPDATE",
            &[&service_id],
        )
        .await
        .unwrap();
    rename
        .execute(
            "UPDATE services SET name = 'New name', version = version + 1 WHERE id = $1",
            &[&service_id],
        )
        .await
        .unwrap();
    let create = {
        let body = order_body("2022-11-01T11:11:11.111Z", json!(1), &[&service]);
        let request = app.client.post(app.url("/orders")).json(&body);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!create.is_finished(), "the create waits for the rename");
    rename.commit().await.unwrap();

    let created = create.await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let etag = created.headers()["etag"].clone();
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["services"][0]["name"], "New name");
    let fetched = app.get(&location).await;
    assert_eq!(fetched.headers()["etag"], etag, "same ETag ...");
    assert_eq!(
        fetched.json::<serde_json::Value>().await.unwrap(),
        created,
        "... same representation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renames_racing_replaces_and_each_other_all_succeed() {
    let app = spawn_app().await;
    let first = app.create_service("First").await;
    let second = app.create_service("Second").await;
    let mut orders = Vec::new();
    for day in 1..=4 {
        let order = app
            .create_order(
                &format!("2022-12-{day:02}T00:00:00Z"),
                json!(1),
                &[&first, &second],
            )
            .await;
        orders.push(format!("/orders/{}", order["id"].as_str().unwrap()));
    }

    // Renames of both services, and replaces that book them in both orders, all at once:
    // the lock order the writes share means none of them waits on another in a cycle.
    let mut requests = Vec::new();
    for round in 0..4 {
        for (service, name) in [(&first, "First"), (&second, "Second")] {
            let path = format!("/services/{service}");
            let body = json!({ "name": format!("{name} {round}") });
            requests.push((path, body, "rename"));
        }
        for (index, path) in orders.iter().enumerate() {
            let services = if (index + round) % 2 == 0 {
                [&first, &second]
            } else {
                [&second, &first]
            };
            let at = format!("2022-12-{:02}T00:00:00Z", index + 1);
            requests.push((
                path.clone(),
                order_body(&at, json!(round), &services.map(String::as_str)),
                "replace",
            ));
        }
    }
    let statuses = join_all(requests.iter().map(|(path, body, kind)| {
        let app = &app;
        async move { (app.put_json(path, body).await.status(), *kind) }
    }))
    .await;

    let failed: Vec<_> = statuses
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}
