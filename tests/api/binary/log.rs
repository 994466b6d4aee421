//! The binary's log, as an operator reads it: whatever a caller sends, a line holds at most a
//! few hundred bytes of it, and the lines anyone can cause without a key are sampled, while
//! the metrics count every such request.

use std::time::Duration;

use reqwest::header;

use super::*;
use crate::helpers::{eventually, http_client_with_key};

/// Requests of each kind sent without a key.
const ANONYMOUS: usize = 200;
/// Requests sent with the key, each of which is logged.
const WITH_KEY: usize = 10;

#[tokio::test]
async fn huge_paths_and_user_agents_grow_the_log_by_little_and_every_refusal_is_counted() {
    // Arrange: a 10 KiB path, a 1 KiB query and a 2 KiB user agent, with a character of two
    // bytes where a cut would fall: within the 16 KiB a request's head may have.
    let (server, _database) = server_on_a_database_of_its_own(|_| {}).await;
    let long_path = format!("/{}", "a".repeat(10 * 1024));
    let long_query = format!("q={}", "b".repeat(1024));
    let user_agent = format!("{}{}", "c".repeat(255), "é".repeat(1024));
    let anonymous = reqwest::Client::new();
    let with_key = http_client_with_key(&server.secret);
    let log_bytes = || std::fs::metadata(&server.log).unwrap().len();
    let log_before = log_bytes();
    let lines_before = server.log_text().lines().count();

    // Act: unknown paths and a protected operation without a key, then reads of an order no
    // order is, with the key.
    for (path, expected) in [
        (long_path.clone(), StatusCode::NOT_FOUND),
        (format!("/orders?{long_query}"), StatusCode::UNAUTHORIZED),
    ] {
        for _ in 0..ANONYMOUS {
            let response = anonymous
                .get(format!("{}{path}", server.base()))
                .header(header::USER_AGENT, &user_agent)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), expected, "{}", &path[..20]);
        }
    }
    // A head longer than the bound (a 60 KiB path) is refused before the service sees it,
    // and logs nothing.
    let too_long = format!("{}/{}", server.base(), "a".repeat(60 * 1024));
    for _ in 0..ANONYMOUS {
        let response = anonymous.get(&too_long).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
    let order_path = format!("/orders/{}?{long_query}", "9".repeat(10 * 1024));
    for _ in 0..WITH_KEY {
        let response = with_key
            .get(format!("{}{order_path}", server.base()))
            .header(header::USER_AGENT, &user_agent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    // Every line before the last keyed one is written once it is.
    let keyed_lines = || {
        log_events(&server, "request served")
            .into_iter()
            .filter(|event| event["span"]["key"] == "operator")
            .collect::<Vec<_>>()
    };
    eventually(
        "the keyed requests' lines",
        Duration::from_secs(10),
        async || keyed_lines().len() == WITH_KEY,
    )
    .await;
    let growth = log_bytes() - log_before;
    let metrics = anonymous
        .get(format!("{}/metrics", server.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Assert: the log grew by a few lines of a few hundred bytes, not by the requests' size.
    println!(
        "the log grew by {growth} bytes for {} requests",
        3 * ANONYMOUS + WITH_KEY
    );
    let text = server.log_text();
    let new_lines: Vec<&str> = text.lines().skip(lines_before).collect();
    let unknown_path_lines: usize = new_lines
        .iter()
        .filter(|line| line.contains("\"status\":404") && !line.contains("\"key\""))
        .map(|line| line.len() + 1)
        .sum();
    println!("of which {unknown_path_lines} bytes for the {ANONYMOUS} requests to an unknown path");
    assert!(growth < 200_000, "the log grew by {growth} bytes");
    for line in &new_lines {
        assert!(
            line.len() < 2048,
            "a line of {} bytes: {}",
            line.len(),
            &line[..300]
        );
    }
    // Each keyed request is logged, with what it sent cut and marked.
    let path_length = order_path.find('?').unwrap();
    for event in keyed_lines() {
        let span = &event["span"];
        assert_eq!(event["status"], 404, "{event}");
        let path = span["path"].as_str().unwrap();
        assert!(path.starts_with("/orders/999"), "{path}");
        assert!(path.ends_with(&format!("…({path_length} bytes)")), "{path}");
        assert!(path.len() < 300, "{path}");
        let query = span["query"].as_str().unwrap();
        assert!(query.starts_with("q=bbb"), "{query}");
        assert!(
            query.ends_with(&format!("…({} bytes)", long_query.len())),
            "{query}"
        );
        // Cut before the character the bound falls in, not through it.
        let agent = span["user_agent"].as_str().unwrap();
        assert_eq!(
            agent,
            format!("{}…({} bytes)", "c".repeat(255), user_agent.len())
        );
    }
    // The refusals without a key are sampled: a line now and then, saying how many alike were
    // not logged since the one before.
    for status in [404, 401] {
        let sampled: Vec<Value> = new_lines
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["message"] == "request served" && event["status"] == status)
            .filter(|event| event["span"]["key"].is_null())
            .collect();
        assert!(!sampled.is_empty(), "{status}: the first one is logged");
        assert!(sampled.len() < 20, "{status}: {} lines", sampled.len());
        let told: u64 = sampled
            .iter()
            .map(|event| 1 + event["suppressed"].as_u64().unwrap())
            .sum();
        assert!(told <= ANONYMOUS as u64, "{status}: {told}");
        assert!(
            sampled[0]["span"]["user_agent"]
                .as_str()
                .unwrap()
                .ends_with("bytes)"),
            "{:?}",
            sampled[0]
        );
    }
    // ... and every one of them is counted.
    for status in [404, 401] {
        let series = format!("anonymous_refusals_total{{status=\"{status}\"}} {ANONYMOUS}\n");
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }
}
