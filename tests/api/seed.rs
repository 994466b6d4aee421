//! The sample data.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;
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
    let orders: Value = app.get("/orders").await.json().await.unwrap();
    let summary: Vec<(Value, Value, Value, Value)> = orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].clone(),
                o["datetime"].clone(),
                o["totalfee"].clone(),
                o["services"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!("223"),
                json!("2022-11-01T11:11:11.111Z"),
                json!(100),
                json!([{ "id": "123", "name": "Inspection" }])
            ),
            (
                json!("224"),
                json!("2022-11-01T14:11:11.111Z"),
                json!(100),
                json!([{ "id": "789", "name": "Testing" }])
            ),
            (
                json!("225"),
                json!("2022-11-01T17:11:11.111Z"),
                json!(100),
                json!([{ "id": "456", "name": "Analysis" }])
            ),
        ]
    );
    // Ids assigned afterwards do not collide with the sample's.
    let response = app
        .post_json("/services", &json!({ "name": "Calibration" }))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["id"], "1000");
}
