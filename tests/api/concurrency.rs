//! Racing writers: the database decides, exactly one wins.

use std::time::Duration;

use futures::future::{join, join_all};
use reqwest::StatusCode;

use crate::helpers::{at, etag, expect_problem, order_input, service_input, spawn_app, status_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_on_overlapping_times_give_exactly_one_201() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;

    // 32 creates, each within 3 hours of every other (all inside one 2-hour span).
    let creates = (0..32).map(|minute| {
        let body = order_input(
            &format!("2022-11-01T12:{:02}:00Z", minute * 3 / 2),
            1.0,
            &[&service],
        );
        let client = app.client();
        async move { status_of(&client.order_create().body(body).send().await) }
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
    assert_eq!(app.all_orders().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_updates_onto_one_time_give_one_200_and_one_409() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let first = app
        .create_order("2022-11-01T00:00:00Z", 1.0, &[&service])
        .await;
    let second = app
        .create_order("2022-11-02T00:00:00Z", 1.0, &[&service])
        .await;
    let target = order_input("2022-11-05T12:00:00Z", 1.0, &[&service]);

    let updates = [&first, &second].map(|order| {
        let (client, target) = (app.client(), target.clone());
        async move {
            status_of(
                &client
                    .order_update()
                    .id(&order.id)
                    .body(target)
                    .send()
                    .await,
            )
        }
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
        .create_order("2022-11-01T00:00:00Z", 1.0, &[&services[0]])
        .await;

    for round in 0..5 {
        // Each writer replaces the whole order with a service list of its own.
        let replaces = services.iter().enumerate().map(|(writer, service)| {
            let body = order_input(
                &format!("2022-11-01T00:{round:02}:00Z"),
                writer as f64,
                &[service],
            );
            let (client, id) = (app.client(), &order.id);
            async move {
                let response = client.order_update().id(id).body(body).send().await;
                assert_eq!(status_of(&response), StatusCode::OK);
                response.unwrap().into_inner()
            }
        });
        let written = join_all(replaces).await;

        // The order now is exactly what one writer wrote: its fee and its one service.
        let now = app.order(&order.id).await;
        let winner = &written[now.totalfee as usize];
        assert_eq!(
            &now, winner,
            "round {round}: the stored order is one writer's whole replace"
        );
        assert_eq!(now.services.len(), 1, "round {round}: {now:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_orders_racing_onto_one_time_give_one_200_and_the_rest_409() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let mut ids = Vec::new();
    for day in 1..=16 {
        let order = app
            .create_order(&format!("2022-12-{day:02}T00:00:00Z"), 1.0, &[&service])
            .await;
        ids.push(order.id);
    }

    for round in 0..8 {
        // Racing updates onto overlapping windows would deadlock inside PostgreSQL (each puts
        // its new time in the exclusion index, then waits for the other's); replaces near one
        // time take turns instead, so every answer is a 200 or a 409, never a 500 or a 503.
        let target = order_input(
            &format!("2023-01-{:02}T12:00:00Z", round + 1),
            1.0,
            &[&service],
        );
        let updates = ids.iter().map(|id| {
            let (client, target) = (app.client(), target.clone());
            async move { status_of(&client.order_update().id(id).body(target).send().await) }
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

/// An order created while a rename of its service is under way shows the name it read, the
/// old one (its statement's snapshot predates the rename's commit; its foreign key check waits
/// for the rename), under an ETag that stands for that name: read again once the rename has
/// committed, it shows the new name under another ETag, and the old one no longer matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_created_during_a_rename_shows_the_name_its_etag_stands_for() {
    let app = spawn_app().await;
    let service = app.create_service("Old name").await;
    let service_id: i64 = service.parse().unwrap();
    // A rename caught half way: the statement the service's own rename runs, not committed.
    let mut client = app.pool.get().await.unwrap();
    let rename = client.transaction().await.unwrap();
    rename
        .execute(
            "UPDATE services SET name = 'New name', version = version + 1 WHERE id = $1",
            &[&service_id],
        )
        .await
        .unwrap();
    let create = {
        let body = order_input("2022-11-01T11:11:11.111Z", 1.0, &[&service]);
        let client = app.client().clone();
        tokio::spawn(async move { client.order_create().body(body).send().await })
    };
    // Committed only once the create is seen waiting for the rename's row lock: committed
    // sooner, the create would read the new name, and the race would not have been tested.
    app.wait_for_a_lock_waiter(
        "the create's foreign key check waits for the rename",
        || !create.is_finished(),
    )
    .await;
    rename.commit().await.unwrap();

    let created = create.await.unwrap().unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created_etag = etag(&created);
    let created = created.into_inner();
    let fetched = app
        .client()
        .order_view()
        .id(&created.id)
        .send()
        .await
        .unwrap();
    assert_eq!(created.services[0].name, "Old name");
    assert_eq!(fetched.services[0].name, "New name");
    assert_ne!(
        etag(&fetched),
        created_etag,
        "a new representation, a new ETag"
    );
    app.assert_order_etag_is_stale(&created.id, &created_etag)
        .await;
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
                1.0,
                &[&first, &second],
            )
            .await;
        orders.push(order.id);
    }

    // Renames of both services, and replaces that book them in both orders, all at once:
    // the lock order the writes share means none of them waits on another in a cycle.
    let client = app.client();
    let mut renames = Vec::new();
    let mut replaces = Vec::new();
    for round in 0..4 {
        for (service, name) in [(&first, "First"), (&second, "Second")] {
            let rename = client
                .service_update()
                .id(service)
                .body(service_input(&format!("{name} {round}")));
            renames.push(async move { (status_of(&rename.send().await), "rename") });
        }
        for (index, id) in orders.iter().enumerate() {
            let services = if (index + round) % 2 == 0 {
                [&first, &second]
            } else {
                [&second, &first]
            };
            let datetime = format!("2022-12-{:02}T00:00:00Z", index + 1);
            let replace = client.order_update().id(id).body(order_input(
                &datetime,
                round as f64,
                &services.map(String::as_str),
            ));
            replaces.push(async move { (status_of(&replace.send().await), "replace") });
        }
    }
    let (renamed, replaced) = join(join_all(renames), join_all(replaces)).await;

    let failed: Vec<_> = renamed
        .iter()
        .chain(&replaced)
        .filter(|(status, _)| *status != StatusCode::OK)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_deleted_while_orders_booking_it_are_created_ends_deleted_or_booked_never_both() {
    let app = spawn_app().await;
    let client = app.client();

    for round in 0..8 {
        // Arrange: a service of the round's own, and 16 creates booking it, 3 hours apart (so
        // only the service can stand between them and a 201), in a month of the round's own.
        let service = app.create_service(&format!("Service {round}")).await;
        let month = at(&format!("2023-{:02}-01T00:00:00Z", round + 1));
        // The creates set off a millisecond apart, and the delete a little later each round,
        // so that it lands at other points of the race: before all of them, among them, after.
        let creates = (0..16).map(|index| {
            let datetime = month + chrono::Duration::hours(3 * index);
            let body = order_input(&datetime.to_rfc3339(), 1.0, &[&service]);
            async move {
                tokio::time::sleep(Duration::from_millis(index as u64)).await;
                client.order_create().body(body).send().await
            }
        });
        let delete = async {
            tokio::time::sleep(Duration::from_millis(2 * round)).await;
            client.service_delete().id(&service).send().await
        };

        // Act
        let (created, deleted) = join(join_all(creates), delete).await;

        // Assert: each create is a 201, or a 422 naming the service; never anything else.
        let mut booked = Vec::new();
        for outcome in created {
            if status_of(&outcome) == StatusCode::CREATED {
                booked.push(outcome.unwrap().into_inner().id);
                continue;
            }
            let problem =
                expect_problem(outcome, StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_SERVICE");
            assert_eq!(
                problem.unknown_service_ids,
                std::slice::from_ref(&service),
                "round {round}"
            );
        }
        // The delete agrees with the creates: 204 only if none of them booked the service,
        // 409 SERVICE_IN_USE if any did.
        let service_gone = booked.is_empty();
        if service_gone {
            let status = status_of(&deleted);
            assert_eq!(status, StatusCode::NO_CONTENT, "round {round}: {deleted:?}");
        } else {
            expect_problem(deleted, StatusCode::CONFLICT, "SERVICE_IN_USE");
            // The delete was refused, so the service stood all along: no create may have been
            // told it does not exist.
            assert_eq!(
                booked.len(),
                16,
                "round {round}: a 422 for a service that stood"
            );
        }
        // And so does what is stored: the service is there exactly when orders book it, and
        // the orders that book it are the ones answered with 201.
        let view = client.service_view().id(&service).send().await;
        if service_gone {
            expect_problem(view, StatusCode::NOT_FOUND, "NOT_FOUND");
        } else {
            assert_eq!(status_of(&view), StatusCode::OK, "round {round}");
        }
        let page = client
            .order_list()
            .service_id(&service)
            .page_size(100)
            .send()
            .await
            .unwrap()
            .into_inner();
        let mut stored: Vec<String> = page.orders.into_iter().map(|order| order.id).collect();
        stored.sort();
        booked.sort();
        assert_eq!(stored, booked, "round {round}");
    }
}
