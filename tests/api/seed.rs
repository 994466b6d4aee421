//! The sample data.

use reqwest::StatusCode;

use crate::helpers::{at, service_input, spawn_app};
use orders::storage::seed::{self, SeedReport};

#[tokio::test]
async fn seeding_loads_the_sample_once_with_its_orders_three_hours_apart() {
    let app = spawn_app().await;

    let first = seed::load(&app.pool).await.unwrap();
    let second = seed::load(&app.pool).await.unwrap();

    assert_eq!(
        first,
        SeedReport {
            services_added: 3,
            orders_added: 3
        }
    );
    assert_eq!(
        second,
        SeedReport {
            services_added: 0,
            orders_added: 0
        },
        "running it twice changes nothing"
    );
    let orders = app.all_orders().await;
    let summary: Vec<_> = orders
        .iter()
        .map(|o| {
            (
                o.id.as_str(),
                o.datetime,
                o.totalfee,
                o.services
                    .iter()
                    .map(|s| (s.id.as_str(), s.name.as_str()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "223",
                at("2022-11-01T11:11:11.111Z"),
                100.0,
                vec![("123", "Inspection")]
            ),
            (
                "224",
                at("2022-11-01T14:11:11.111Z"),
                100.0,
                vec![("789", "Testing")]
            ),
            (
                "225",
                at("2022-11-01T17:11:11.111Z"),
                100.0,
                vec![("456", "Analysis")]
            ),
        ]
    );
    // Ids assigned afterwards do not collide with the sample's.
    let created = app
        .client()
        .service_create()
        .body(service_input("Calibration"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.id, "1000");
}
