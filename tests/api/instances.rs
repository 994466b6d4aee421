//! Several instances on one database, as behind a load balancer: the rules hold across them
//! because the database decides, not any one instance. (Keys made or revoked through one
//! instance reaching every other is `auth`'s test.)

use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{TestApp, order_input, spawn_app, status_of};

/// Three instances of the service sharing the first one's database.
async fn three_instances() -> [TestApp; 3] {
    let first = spawn_app().await;
    let second = first.another_instance(|_| {}).await;
    let third = first.another_instance(|_| {}).await;
    [first, second, third]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_48_creates_for_one_slot_spread_over_three_instances_exactly_one_succeeds() {
    let instances = three_instances().await;
    let service = instances[0].create_service("Inspection").await;

    // Every time is within 3 hours of every other: at most one of them can be booked.
    let creates = (0..48).map(|index| {
        let instance = &instances[index % instances.len()];
        let body = order_input(
            &format!("2022-11-01T12:{:02}:00Z", index % 60),
            1.0,
            &[&service],
        );
        async move { status_of(&instance.client().order_create().body(body).send().await) }
    });
    let statuses = join_all(creates).await;

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (1, 47), "{statuses:?}");
    for instance in &instances {
        assert_eq!(
            instance.all_orders().await.len(),
            1,
            "every instance sees the one order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaces_racing_onto_one_time_across_three_instances_keep_the_three_hour_rule() {
    let instances = three_instances().await;
    let service = instances[0].create_service("Inspection").await;
    let mut ids = Vec::new();
    for day in 1..=12 {
        let order = instances[day % instances.len()]
            .create_order(&format!("2022-12-{day:02}T00:00:00Z"), 1.0, &[&service])
            .await;
        ids.push(order.id);
    }

    for round in 0..4 {
        // Each round moves every order to within minutes of one time, through all three.
        let replaces = ids.iter().enumerate().map(|(index, id)| {
            let instance = &instances[index % instances.len()];
            let body = order_input(
                &format!("2023-01-{:02}T12:{index:02}:00Z", round + 1),
                1.0,
                &[&service],
            );
            async move {
                status_of(
                    &instance
                        .client()
                        .order_update()
                        .id(id)
                        .body(body)
                        .send()
                        .await,
                )
            }
        });
        let statuses = join_all(replaces).await;

        let moved = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!(
            (moved, refused),
            (1, ids.len() - 1),
            "round {round}: {statuses:?}"
        );
    }

    // Whatever each instance answered, the stored calendar has no two orders within 3 hours.
    let mut times: Vec<_> = instances[2]
        .all_orders()
        .await
        .into_iter()
        .map(|order| order.datetime)
        .collect();
    times.sort();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::hours(3),
            "{} and {} are less than 3 hours apart",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(times.len(), ids.len());
}
