//! The binary's shutdown on SIGTERM: readiness answers 503, new connections are refused, idle
//! ones closed, requests in flight finished, and the process exits within its bounds.

use std::{
    io::Write,
    net::TcpStream,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::helpers::time_until_closed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_and_half_sent_connections_at_once_refuses_new_ones_and_exits_once_the_request_in_flight_is_answered()
 {
    // Arrange: waits for locks longer than the test holds one, a drain bound far longer.
    let (mut server, database) = server_on_a_database_of_its_own(|command| {
        command
            .env("ORDERS_DB_LOCK_TIMEOUT", "60s")
            .env("ORDERS_DB_STATEMENT_TIMEOUT", "60s")
            .env("ORDERS_SHUTDOWN_TIMEOUT", "30s");
    })
    .await;
    let service = crate::helpers::http_client_with_key(&server.secret)
        .post(format!("{}/services", server.base()))
        .json(&json!({ "name": "Inspection" }))
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), StatusCode::CREATED);
    let service_id = service.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut locker = database.pool.get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // In flight: a create, sent whole, waiting for the lock.
    let body = json!({
        "datetime": "2023-01-01T00:00:00Z",
        "totalfee": 5,
        "services": [{ "id": service_id }],
    })
    .to_string();
    let mut in_flight = TcpStream::connect(server.address).unwrap();
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\ncontent-length: {}\r\n\r\n{body}",
        server.address,
        server.secret,
        body.len()
    );
    in_flight.write_all(request.as_bytes()).unwrap();
    database.wait_for_a_lock_waiter().await;
    // Idle: a keep-alive connection after one answer.
    let mut idle = TcpStream::connect(server.address).unwrap();
    write!(
        idle,
        "GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n",
        server.address
    )
    .unwrap();
    assert_eq!(read_one_response(&mut idle).status, 200);
    // Half sent: a request head cut short.
    let mut half_sent = TcpStream::connect(server.address).unwrap();
    write!(
        half_sent,
        "GET /healthz HTTP/1.1\r\nhost: {}\r\n",
        server.address
    )
    .unwrap();
    // Accepted and read by now, so it is closed as a connection, not refused as a newcomer.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let idle_closed = time_until_closed(&mut tokio_stream(idle), Duration::from_secs(10)).await;
    let half_sent_closed =
        time_until_closed(&mut tokio_stream(half_sent), Duration::from_secs(10)).await;
    let newcomer = connect(server.address);
    // The request stays in flight for a while after the signal: the server must wait for it.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(signalled.elapsed())).await;
    let running_with_a_request_in_flight = server.is_running();
    lock.rollback().await.unwrap();
    let released = Instant::now();
    let response = RawResponse::parse(&read_until_closed(&mut in_flight));
    let exit = server.wait(Duration::from_secs(20));
    let exited_after_release = released.elapsed();

    // Assert
    assert!(
        idle_closed < Duration::from_secs(2),
        "the idle connection was closed {idle_closed:?} after SIGTERM"
    );
    assert!(
        half_sent_closed < Duration::from_secs(2),
        "the half-sent request's connection was closed {:?} after SIGTERM",
        idle_closed + half_sent_closed
    );
    assert_eq!(
        newcomer.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a connection made after SIGTERM is refused: {newcomer:?}"
    );
    assert!(
        running_with_a_request_in_flight,
        "still running 1 s after SIGTERM, with a request in flight; log:\n{}",
        server.log_text()
    );
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.header("connection"), "close");
    assert_eq!(
        response.header("content-length"),
        response.body.len().to_string(),
        "the whole body arrived"
    );
    let order: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(order["datetime"], "2023-01-01T00:00:00.000Z");
    assert_eq!(order["services"][0]["id"], json!(service_id));
    // Far within the 30 s drain bound: it stopped because the request was done.
    assert!(
        exited_after_release < Duration::from_secs(3),
        "exited {exited_after_release:?} after the request could finish; log:\n{}",
        server.log_text()
    );
    assert!(exit.success(), "{exit}; log:\n{}", server.log_text());
    assert!(
        log_events(&server, "shutting down: requests still in progress").is_empty(),
        "nothing was cut off; log:\n{}",
        server.log_text()
    );
    let stored: i64 = database
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "the order answered with 201 was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_shutdown_delay_readyz_answers_503_shutting_down_and_the_rest_is_served_then_new_connections_are_refused()
 {
    // Arrange
    let delay = Duration::from_secs(3);
    let (mut server, _database) = server_on_a_database_of_its_own(|command| {
        command.env("ORDERS_SHUTDOWN_DELAY", "3s");
    })
    .await;

    // Act
    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let not_ready = loop {
        let ready = get_on_a_new_connection(server.address, "/readyz").expect("an answer");
        if !ready.starts_with("HTTP/1.1 200 ") || signalled.elapsed() > Duration::from_secs(2) {
            break RawResponse::parse(ready.as_bytes());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let turned_after = signalled.elapsed();
    let healthz = get_on_a_new_connection(server.address, "/healthz")
        .map(|text| RawResponse::parse(text.as_bytes()));
    let refused_after = loop {
        match connect(server.address) {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                break signalled.elapsed();
            }
            _ => {}
        }
        assert!(
            signalled.elapsed() < delay + Duration::from_secs(5),
            "still accepting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exit = server.wait(Duration::from_secs(10));

    // Assert
    assert!(turned_after < Duration::from_secs(1), "{turned_after:?}");
    assert_eq!(not_ready.status, 503, "{not_ready:?}");
    assert_eq!(not_ready.header("content-type"), "application/problem+json");
    assert_eq!(not_ready.header("retry-after"), "5");
    let problem: Value = serde_json::from_str(&not_ready.body).unwrap();
    assert_eq!(problem["code"], "SHUTTING_DOWN", "{problem}");
    assert_eq!(problem["status"], 503);
    assert_eq!(
        healthz.map(|response| response.status),
        Some(200),
        "served during the delay"
    );
    assert!(
        refused_after >= delay - Duration::from_millis(100),
        "the listener closed {refused_after:?} after SIGTERM, before the {delay:?} delay"
    );
    assert!(exit.success(), "{exit}; log:\n{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_shutdown_timeout_a_request_still_in_progress_is_cut_off_and_the_process_exits() {
    // Arrange: a read that waits for a lock far longer than the 2 s drain bound.
    let (mut server, database) = server_on_a_database_of_its_own(|command| {
        command
            .env("ORDERS_DB_LOCK_TIMEOUT", "60s")
            .env("ORDERS_DB_STATEMENT_TIMEOUT", "60s")
            .env("ORDERS_SHUTDOWN_TIMEOUT", "2s");
    })
    .await;
    let mut locker = database.pool.get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut in_flight = TcpStream::connect(server.address).unwrap();
    write!(
        in_flight,
        "GET /orders HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
        server.address, server.secret,
    )
    .unwrap();
    database.wait_for_a_lock_waiter().await;

    // Act
    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let exit = server.wait(Duration::from_secs(10));
    let exited_after = signalled.elapsed();
    let answer = read_until_closed(&mut in_flight);
    lock.rollback().await.unwrap();

    // Assert: it waited for the bound, not for the request, then closed the connection.
    assert!(
        exited_after >= Duration::from_secs(2) && exited_after < Duration::from_secs(5),
        "exited {exited_after:?} after SIGTERM; log:\n{}",
        server.log_text()
    );
    assert!(exit.success(), "{exit}; log:\n{}", server.log_text());
    assert!(
        answer.is_empty(),
        "the cut-off request got no answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        log_events(&server, "shutting down: requests still in progress").len(),
        1,
        "the cut-off is logged; log:\n{}",
        server.log_text()
    );
}

/// `stream` as tokio's, to wait on without holding up the runtime.
fn tokio_stream(stream: std::net::TcpStream) -> tokio::net::TcpStream {
    stream.set_nonblocking(true).unwrap();
    tokio::net::TcpStream::from_std(stream).unwrap()
}
