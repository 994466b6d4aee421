//! What requests cost when the tables are large: a rename of a service that a hundred
//! thousand orders book writes that service's row alone.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{etag, service_input, spawn_app};

const BOOKINGS: i64 = 100_000;

/// The physical position of every order row: an UPDATE of a row, even one that changes no
/// column, moves it, so an unchanged fingerprint means no order row was written.
const ORDER_ROWS_FINGERPRINT: &str =
    "SELECT md5(string_agg(ctid::text, ',' ORDER BY id)) FROM orders";

#[tokio::test]
async fn renaming_a_service_booked_by_a_hundred_thousand_orders_writes_one_row() {
    let app = spawn_app().await;
    let booked = app.create_service("Booked everywhere").await;
    let unused = app.create_service("Booked nowhere").await;
    let booked_id: i64 = booked.parse().unwrap();
    let client = app.insert_bulk_orders(BOOKINGS).await;
    client
        .execute(
            "INSERT INTO order_services (order_id, service_id, position)
             SELECT id, $1, 1 FROM orders",
            &[&booked_id],
        )
        .await
        .unwrap();
    client.execute("ANALYZE", &[]).await.unwrap();
    let some_order: i64 = client
        .query_one("SELECT min(id) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    let some_order = some_order.to_string();
    let before_etag = etag(
        &app.client()
            .order_view()
            .id(&some_order)
            .send()
            .await
            .unwrap(),
    );
    let fingerprint = async || -> String {
        let row = client.query_one(ORDER_ROWS_FINGERPRINT, &[]).await.unwrap();
        row.get(0)
    };
    let rows_before = fingerprint().await;

    let rename = async |id: &str, name: &str| {
        let started = Instant::now();
        let renamed = app
            .client()
            .service_update()
            .id(id)
            .body(service_input(name))
            .send()
            .await
            .unwrap();
        assert_eq!(renamed.status(), StatusCode::OK);
        started.elapsed()
    };
    // The fastest of a few tries of each, so one slow moment on a shared machine does not
    // decide it.
    let mut booked_took = Duration::MAX;
    let mut unused_took = Duration::MAX;
    for round in 0..3 {
        booked_took = booked_took.min(rename(&booked, &format!("Booked everywhere {round}")).await);
        unused_took = unused_took.min(rename(&unused, &format!("Booked nowhere {round}")).await);
    }

    assert_eq!(fingerprint().await, rows_before, "no order row was written");
    assert!(
        booked_took < unused_took * 5 + Duration::from_millis(50),
        "renaming the booked service took {booked_took:?}, the unused one {unused_took:?}"
    );
    let after = app
        .client()
        .order_view()
        .id(&some_order)
        .send()
        .await
        .unwrap();
    assert_eq!(after.services[0].name, "Booked everywhere 2");
    assert_ne!(
        etag(&after),
        before_etag,
        "the order's representation changed, so its ETag did"
    );
    app.assert_order_etag_is_stale(&some_order, &before_etag)
        .await;
}
