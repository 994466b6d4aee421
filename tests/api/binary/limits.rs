//! The binary at its limits: the open-file limit raised at start and the accept loop backing
//! off at it, and a handler's panic answered with the process serving on.

use std::{io::Write, net::TcpStream, time::Duration};

use serde_json::{Value, json};

use super::*;
use crate::helpers::{cpu_time_of, eventually, eventually_some};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_file_limit_the_accept_loop_backs_off_logs_and_recovers_without_spinning() {
    // Arrange: a server whose open-file limit (soft and hard) is 64, with a cap set far past it,
    // so connections alone run it out of descriptors.
    const LIMIT: u64 = 64;
    let (server, _database) = server_on_a_database_of_its_own(|command| {
        command
            .env("ORDERS_MAX_CONNECTIONS", "1000")
            .env("ORDERS_DB_POOL_SIZE", "2");
        limit_open_files(command, LIMIT, LIMIT);
    })
    .await;
    let pid = server.child.id();

    // Act: more connections than it has descriptors, held.
    let held: Vec<TcpStream> = (0..2 * LIMIT)
        .map(|_| TcpStream::connect(server.address).unwrap())
        .collect();
    // Until it has accepted what it can and met the limit.
    eventually(
        "an accept refused at the limit",
        Duration::from_secs(10),
        async || !log_events(&server, "could not accept a connection").is_empty(),
    )
    .await;
    let cpu_before = cpu_time_of(pid);
    let hold = Duration::from_secs(3);
    tokio::time::sleep(hold).await;
    let cpu = cpu_time_of(pid) - cpu_before;
    let errors = log_events(&server, "could not accept a connection");
    drop(held);
    let what = "answering once the connections were closed";
    let healthz = eventually_some(what, Duration::from_secs(10), async || {
        get_on_a_new_connection(server.address, "/healthz")
            .map(|answer| RawResponse::parse(answer.as_bytes()))
    })
    .await;

    // Assert: a spinning loop would take a whole core for the whole hold.
    assert!(
        cpu < Duration::from_millis(500),
        "{cpu:?} of CPU in {hold:?}"
    );
    assert!(
        !errors.is_empty()
            && errors.iter().all(|event| {
                event["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("os error 24"))
            }),
        "the accept errors are logged, as too many open files: {errors:?}; log:\n{}",
        server.log_text()
    );
    // One line per 10 s at most, however many errors: the first, and perhaps one more.
    assert!(errors.len() <= 2, "{errors:?}");
    assert_eq!(healthz.status, 200, "{healthz:?}");
}

#[tokio::test]
async fn at_start_the_soft_open_file_limit_is_raised_to_the_hard_one_and_the_connection_cap_follows_it()
 {
    // Arrange: a soft limit far below the hard one, as many systems start services with.
    const SOFT: u64 = 256;
    const HARD: u64 = 2048;
    let (server, _database) = server_on_a_database_of_its_own(|command| {
        command.env("ORDERS_DB_POOL_SIZE", "4");
        limit_open_files(command, SOFT, HARD);
    })
    .await;

    // Act
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let serving = log_events(&server, "serving");

    // Assert: the limit in force is the hard one, and the cap was derived from it.
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3..5],
        [HARD.to_string(), HARD.to_string()],
        "{limits}"
    );
    assert_eq!(
        serving[0]["max_connections"],
        json!(orders::server::open_files::default_connection_cap(
            Some(HARD),
            4
        )),
        "{serving:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_handler_is_logged_with_its_message_and_the_connection_serves_on() {
    // Arrange: an order whose time no answer can hold (year 10000), written around the API.
    let (mut server, database) = server_on_a_database_of_its_own(|_| {}).await;
    database
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO services (id, name, created_by, updated_by)
                 OVERRIDING SYSTEM VALUE VALUES (77, 'Inspection', 'bulk', 'bulk');
             INSERT INTO orders (id, scheduled_at, total_fee, created_by, updated_by)
                 OVERRIDING SYSTEM VALUE VALUES (5000, '10000-01-01T00:00:00Z', 1, 'bulk', 'bulk');
             INSERT INTO order_services (order_id, service_id, position) VALUES (5000, 77, 1);",
        )
        .await
        .unwrap();
    let mut connection = TcpStream::connect(server.address).unwrap();
    let request = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\nx-request-id: panic-log-test\r\n\r\n",
            server.address, server.secret
        )
    };

    // Act: the panicking request, then another on the same connection.
    connection
        .write_all(request("/orders/5000").as_bytes())
        .unwrap();
    let panicked = read_one_response(&mut connection);
    connection
        .write_all(request("/services/77").as_bytes())
        .unwrap();
    let after = read_one_response(&mut connection);

    // Assert
    assert_eq!(panicked.status, 500, "{panicked:?}");
    let problem: Value = serde_json::from_str(&panicked.body).unwrap();
    assert_eq!(problem["code"], "INTERNAL");
    assert_eq!(problem["request_id"], "panic-log-test");
    assert_eq!(
        after.status, 200,
        "the same connection serves on: {after:?}"
    );
    let logged = log_events(&server, "a handler panicked");
    assert!(
        logged.len() == 1
            && logged[0]["panic"]
                .as_str()
                .is_some_and(|message| message.contains("stored timestamps are within range"))
            && logged[0]["span"]["request_id"] == "panic-log-test",
        "the panic is logged once, with its message and the request's id: {logged:?}; log:\n{}",
        server.log_text()
    );
    assert!(server.is_running(), "the process runs on");
}

/// Starts the server with its open-file limit set to `soft` and `hard`.
fn limit_open_files(command: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe, and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
                .map_err(std::io::Error::from)
        });
    }
}
