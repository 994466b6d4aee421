//! Traces: a request can be followed from its log line down to the storage calls it made, with
//! the ids they touched.

use std::{
    io,
    sync::{Arc, Mutex},
};

use serde_json::Value;
use tracing_subscriber::{fmt::format::FmtSpan, layer::SubscriberExt};

use crate::helpers::spawn_app;

/// Log output kept in memory, for a test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

// On one thread, so the app's tasks log to the subscriber this test sets for its thread.
#[tokio::test(flavor = "current_thread")]
async fn a_storage_span_carries_the_order_id_inside_its_request_span() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_span_events(FmtSpan::CLOSE)
            .with_span_list(true)
            .with_writer(move || writer.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let response = app
        .http
        .get(app.url(&format!("/orders/{}", order.id)))
        .header("x-request-id", "follow-me-42")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let lines = captured.lines();
    let fetch = lines
        .iter()
        .find(|line| line["span"]["name"] == "orders.fetch")
        .unwrap_or_else(|| panic!("a closed orders.fetch span in {lines:#?}"));
    assert_eq!(fetch["span"]["order_id"], order.id.as_str(), "{fetch}");
    let request = &fetch["spans"][0];
    assert_eq!(request["name"], "request", "{fetch}");
    assert_eq!(request["request_id"], "follow-me-42", "{fetch}");
    // The request's own line names the same request id, so one leads to the other.
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "request served"
                && line["span"]["request_id"] == "follow-me-42"),
        "{lines:#?}"
    );
}
