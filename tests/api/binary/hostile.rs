//! What a hostile caller can make the binary spend: a request that no route takes or that
//! carries no valid key is refused from its head, whatever body it sends, and a body built to
//! make the duplicate-key check slow costs what reading any body of its size costs. Measured as
//! the server process's own CPU time, in ratios taken in one run (its build is unoptimised, so
//! only ratios mean anything).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use super::*;
use crate::helpers::cpu_time_of;

/// The worst body for a walk that rebuilds a field's path for every element: a key of 30,000
/// characters holding 15,000 zeros, 60 KiB in all.
fn deep_path_body() -> String {
    let key = "k".repeat(30_000);
    let zeros = vec!["0"; 15_000].join(",");
    format!("{{\"{key}\": [{zeros}]}}")
}

/// A body of the same size with twice the elements, under a short key: what a walk that is
/// linear in the body costs for it is what it costs for the one above.
fn wide_body() -> String {
    let zeros = vec!["0"; 30_000].join(",");
    format!("{{\"k\": [{zeros}]}}")
}

/// Sends `head` (with `body`, its `Content-Length` added) on a new connection, and returns
/// everything the server wrote before it closed, or stopped writing for a second.
fn exchange(address: SocketAddr, head: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let request = format!(
        "{head}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The server may answer and close before the body is all sent: that is the point.
    let _ = stream.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The server's CPU time for `count` exchanges of `head` and `body`, each answered `status`.
fn cpu_for(server: &Server, count: usize, head: &str, body: &str, status: &str) -> Duration {
    let pid = server.child.id();
    let before = cpu_time_of(pid);
    for _ in 0..count {
        let answer = exchange(server.address, head, body);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{head}: {}",
            answer.lines().next().unwrap_or("(no answer)")
        );
    }
    cpu_time_of(pid) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_route_or_a_key_costs_what_its_head_costs_whatever_its_body() {
    // Arrange
    let (server, _database) = server_on_a_database_of_its_own(|_| {}).await;
    let body = deep_path_body();
    const COUNT: usize = 200;

    // Act: the same heads with no body and with the worst body, in turn, so that whatever else
    // the machine does falls on both alike.
    let mut without_body = Duration::ZERO;
    let mut with_body = Duration::ZERO;
    for _ in 0..4 {
        for head in [
            "POST /nowhere HTTP/1.1\r\nhost: x\r\n",
            "POST /healthz HTTP/1.1\r\nhost: x\r\n",
            "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n",
        ] {
            let status = match head {
                _ if head.contains("/nowhere") => "404",
                _ if head.contains("/healthz") => "405",
                _ => "401",
            };
            without_body += cpu_for(&server, COUNT / 4, head, "", status);
            with_body += cpu_for(&server, COUNT / 4, head, &body, status);
        }
    }

    // Assert: within twice, and a tick of the clock (10 ms) either way.
    let tick = Duration::from_millis(20);
    assert!(
        with_body <= without_body * 2 + tick,
        "{COUNT}×3 requests cost {with_body:?} with a 60 KiB body, {without_body:?} without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_may_not_go_on_is_never_told_to_continue() {
    // Arrange
    let (server, _database) = server_on_a_database_of_its_own(|_| {}).await;

    for (head, status) in [
        ("POST /nowhere HTTP/1.1\r\nhost: x\r\n", "404"),
        (
            "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n",
            "401",
        ),
        (
            "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             authorization: Bearer ord_0000000000000000_nothing\r\n",
            "401",
        ),
    ] {
        // Act: ask to continue, and wait for the answer before sending the body.
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!("{head}content-length: 100\r\nexpect: 100-continue\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = vec![0; 4096];
        let read = stream.read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);

        // Assert: the refusal itself, not a 100 Continue.
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{head}: {answer}"
        );
        assert!(
            answer.contains("application/problem+json"),
            "{head}: {answer}"
        );
    }

    // And a request that may go on is told to.
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!(
        "POST /services HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\ncontent-length: 100\r\nexpect: 100-continue\r\n\r\n",
        server.secret
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = vec![0; 4096];
    let read = stream.read(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&answer[..read])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_built_to_slow_the_duplicate_key_check_costs_what_any_body_of_its_size_costs() {
    // Arrange
    let (server, _database) = server_on_a_database_of_its_own(|_| {}).await;
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\n",
        server.secret
    );
    let deep = deep_path_body();
    let wide = wide_body();
    const COUNT: usize = 40;

    // Act: both refused (400: neither is an order), in turn.
    let mut deep_cost = Duration::ZERO;
    let mut wide_cost = Duration::ZERO;
    for _ in 0..4 {
        deep_cost += cpu_for(&server, COUNT / 4, &head, &deep, "400");
        wide_cost += cpu_for(&server, COUNT / 4, &head, &wide, "400");
    }

    // Assert: no more than the wide body's, give or take a half and a tick of the clock.
    let tick = Duration::from_millis(20);
    assert!(
        deep_cost <= wide_cost * 3 / 2 + tick,
        "{COUNT} bodies cost {deep_cost:?} with 15,000 elements under a 30,000-character key, \
         {wide_cost:?} with 30,000 under a short one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_longer_than_proxies_allow_is_refused_without_being_held() {
    // Arrange
    let (server, _database) = server_on_a_database_of_its_own(|_| {}).await;

    // Act: a header of 20 KiB, sent whole.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n",
        "p".repeat(20 * 1024)
    );
    let answer = exchange(server.address, &head, "");

    // Assert
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        answer.lines().next().unwrap_or("(no answer)")
    );
    // A head within the bound is served.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n",
        "p".repeat(8 * 1024)
    );
    assert!(exchange(server.address, &head, "").starts_with("HTTP/1.1 200"));
}
