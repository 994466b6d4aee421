//! Connections a hostile or careless client holds: past the cap, silent, or sending their
//! request heads a byte at a time. They are closed after their bounds, and another client is
//! answered quickly all the while, with little CPU spent on them.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{
    TestApp, cpu_time_of, eventually, http_client_with_key, is_closed, spawn_app_with,
    time_until_closed,
};

fn socket_address(app: &TestApp) -> SocketAddr {
    app.address
        .strip_prefix("http://")
        .and_then(|address| address.parse().ok())
        .expect("the app's address is http://host:port")
}

/// A connection that sends a request head a byte every `every`, and never finishes it, until
/// the server closes it. Returns how long the server kept it open.
async fn trickle_header(address: SocketAddr, every: Duration, limit: Duration) -> Duration {
    trickle_after(
        address,
        "GET /healthz HTTP/1.1\r\nhost: test\r\nx-slow: ".to_owned(),
        every,
        limit,
    )
    .await
}

/// A connection that sends `start`, then a byte every `every` until the server closes it.
/// Returns how long the server kept it open.
async fn trickle_after(
    address: SocketAddr,
    start: String,
    every: Duration,
    limit: Duration,
) -> Duration {
    let stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        if writer.write_all(start.as_bytes()).await.is_err() {
            return;
        }
        while writer.write_all(b"a").await.is_ok() {
            tokio::time::sleep(every).await;
        }
    });
    let mut buffer = [0; 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    writing.abort();
    assert!(
        closed.is_ok(),
        "a trickling connection is open after {limit:?}"
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_connections_past_the_cap_does_not_keep_another_client_out() {
    // Arrange: a small cap, and bounds far longer than the test, so that only the cap acts.
    const CAP: usize = 16;
    let long = Duration::from_secs(60);
    let app = spawn_app_with(|settings| {
        settings.connections.header_read_timeout = long;
        settings.connections.idle_timeout = long;
        settings.connections.request_timeout = long;
        settings.connections.max_connections = Some(CAP);
    })
    .await;
    let address = socket_address(&app);
    let cpu_before = cpu_time_of(std::process::id());
    let hold_started = Instant::now();

    // Act: the hostile client fills the cap with silent connections, opens half as many again
    // that trickle header bytes, and goes on opening silent ones while another client works.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(address).await.unwrap());
    }
    let tricklers: Vec<_> = (0..CAP / 2)
        .map(|_| {
            tokio::spawn(trickle_header(
                address,
                Duration::from_millis(500),
                Duration::from_secs(30),
            ))
        })
        .collect();
    let mut answer_times = Vec::new();
    while hold_started.elapsed() < Duration::from_secs(4) {
        held.push(TcpStream::connect(address).await.unwrap());
        // A new client each time: a new connection, which must find room.
        let client = http_client_with_key(&app.secret);
        for path in ["/healthz", "/services"] {
            let sent = Instant::now();
            let response = client.get(format!("{}{path}", app.address)).send().await;
            let status = response.map(|response| response.status()).ok();
            answer_times.push((path, status, sent.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hold = hold_started.elapsed();
    let cpu = cpu_time_of(std::process::id()) - cpu_before;
    // As many again: every connection opened before them, trickling or not, must give way.
    for _ in 0..CAP {
        held.push(TcpStream::connect(address).await.unwrap());
    }

    // Assert
    for (path, status, took) in &answer_times {
        assert_eq!(
            *status,
            Some(StatusCode::OK),
            "GET {path}: {answer_times:?}"
        );
        assert!(
            *took < Duration::from_millis(900),
            "GET {path} took {took:?}: {answer_times:?}"
        );
    }
    for (index, stream) in held.iter_mut().take(CAP).enumerate() {
        assert!(
            is_closed(stream, Duration::from_secs(5)).await,
            "the first silent connections gave way to newer ones; #{index} did not"
        );
    }
    // The server may take a moment to accept the last ones, and close older ones for them.
    let silent = held.len();
    let what = format!("at most {CAP} of the {silent} silent connections still open");
    eventually(&what, Duration::from_secs(5), async || {
        let mut still_open = 0;
        for stream in &mut held {
            if !is_closed(stream, Duration::from_millis(5)).await {
                still_open += 1;
            }
        }
        still_open <= CAP
    })
    .await;
    // The trickling ones are older than the other client's: they gave way too, although they
    // keep sending.
    for trickler in tricklers {
        let kept = trickler.await.unwrap();
        assert!(kept < Duration::from_secs(30), "{kept:?}");
    }
    // A busy loop would take a whole core for the whole hold.
    assert!(
        cpu < hold / 3,
        "the process used {cpu:?} of CPU time in {hold:?} of holding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_close_after_the_header_timeout_slow_bodies_after_the_request_timeout_and_idle_ones_after_the_idle_timeout()
 {
    // Arrange
    let header_read = Duration::from_secs(1);
    let idle = Duration::from_secs(3);
    let request = Duration::from_secs(2);
    // A loaded machine may close late, never early.
    let margin = Duration::from_secs(3);
    let app = spawn_app_with(|settings| {
        settings.connections.header_read_timeout = header_read;
        settings.connections.idle_timeout = idle;
        settings.connections.request_timeout = request;
    })
    .await;
    let address = socket_address(&app);

    // Act
    let silent = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        time_until_closed(&mut stream, Duration::from_secs(30)).await
    });
    let trickling = tokio::spawn(trickle_header(
        address,
        Duration::from_millis(200),
        Duration::from_secs(30),
    ));
    let slow_body = tokio::spawn(trickle_after(
        address,
        format!(
            "POST /services HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"name\": \"",
            app.secret
        ),
        Duration::from_millis(200),
        Duration::from_secs(30),
    ));
    let keep_alive = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let mut buffer = [0; 1024];
        // The whole answer: the status body is `{"status":"ok"}`.
        while !response.ends_with(b"}") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert_ne!(read, 0, "closed before answering: {response:?}");
            response.extend_from_slice(&buffer[..read]);
        }
        let response = String::from_utf8_lossy(&response).into_owned();
        let kept = time_until_closed(&mut stream, Duration::from_secs(30)).await;
        (response, kept)
    });
    let silent = silent.await.unwrap();
    let trickling = trickling.await.unwrap();
    let (response, keep_alive) = keep_alive.await.unwrap();
    let slow_body = slow_body.await.unwrap();

    // Assert
    let near = |bound: Duration| bound - Duration::from_millis(100)..bound + margin;
    assert!(near(header_read).contains(&silent), "silent: {silent:?}");
    assert!(
        near(header_read).contains(&trickling),
        "trickling a byte every 200 ms: {trickling:?}"
    );
    assert!(
        near(request).contains(&slow_body),
        "a body sent a byte every 200 ms: {slow_body:?}"
    );
    assert!(response.starts_with("HTTP/1.1 200 "), "{response:?}");
    assert!(
        near(idle).contains(&keep_alive),
        "idle after an answer: {keep_alive:?}"
    );
}

/// A request to create a service whose body never ends: sent a byte at a time after its head.
fn slow_create(secret: &str) -> String {
    format!(
        "POST /services HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {secret}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"name\": \""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_off_mid_request_leaves_no_place_behind_at_the_cap() {
    // Arrange: room for two; only the request timeout is short.
    const CAP: usize = 2;
    let long = Duration::from_secs(60);
    let app = spawn_app_with(|settings| {
        settings.connections.header_read_timeout = long;
        settings.connections.idle_timeout = long;
        settings.connections.request_timeout = Duration::from_secs(1);
        settings.connections.max_connections = Some(CAP);
    })
    .await;
    let address = socket_address(&app);

    // Act: a request cut off by the request timeout; its handler finishes after its
    // connection has gone. Then the cap is filled, and one more connection arrives.
    trickle_after(
        address,
        slow_create(&app.secret),
        Duration::from_millis(200),
        Duration::from_secs(30),
    )
    .await;
    // Until only the scrape asking is in progress: the cut-off request's handler is done.
    eventually(
        "the cut-off request finished",
        Duration::from_secs(10),
        async || app.gauge("http_server_active_requests").await <= 1.0,
    )
    .await;
    let mut first = TcpStream::connect(address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = TcpStream::connect(address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(address).await.unwrap();

    // Assert: the newcomer takes the place of the one that waited longest; the gone
    // connection holds none.
    assert!(
        is_closed(&mut first, Duration::from_secs(5)).await,
        "at the cap, the connection that waited longest stays open beside a newer one"
    );
    assert!(!is_closed(&mut second, Duration::from_millis(500)).await);
    assert!(!is_closed(&mut third, Duration::from_millis(500)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_closed_after_the_request_timeout() {
    // Arrange
    let long = Duration::from_secs(60);
    let request = Duration::from_secs(2);
    let app = spawn_app_with(|settings| {
        settings.connections.header_read_timeout = long;
        settings.connections.idle_timeout = long;
        settings.connections.request_timeout = request;
    })
    .await;
    let address = socket_address(&app);
    // A small window; the kernel still takes a few megabytes from the server, so the docs
    // page (well over one) is asked for several times, for most of the answers to stay in the
    // server's hands.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();

    // Act: ask for the docs page, pipelined, and read nothing for longer than the request
    // timeout.
    stream
        .write_all(&b"GET /docs HTTP/1.1\r\nhost: test\r\n\r\n".repeat(8))
        .await
        .unwrap();
    tokio::time::sleep(request + Duration::from_secs(3)).await;

    // Assert: the server has closed it. Reading now lets an open connection finish its
    // answer and then wait for the next request (the idle timeout is a minute), so only a
    // connection already closed reaches its end here.
    let mut page = 0;
    let mut buffer = vec![0; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => page += read,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a client reading nothing of its answer kept its connection past the request \
         timeout; it read {page} bytes afterwards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_too_long_to_reach_never_run_out() {
    // Arrange
    let app = spawn_app_with(|settings| {
        settings.connections.header_read_timeout = Duration::MAX;
        settings.connections.idle_timeout = Duration::MAX;
        settings.connections.request_timeout = Duration::MAX;
    })
    .await;

    // Act: two requests, the second on the connection kept alive after the first.
    let client = http_client_with_key(&app.secret);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client.get(format!("{}/healthz", app.address)).send().await;
        statuses.push(response.map(|response| response.status()).ok());
    }

    // Assert
    assert_eq!(statuses, [Some(StatusCode::OK); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_progress_at_shutdown_is_still_cut_off_by_the_request_timeout() {
    // Arrange: an app of the test's own, to shut it down; the shutdown timeout is far longer
    // than the request timeout.
    let request = Duration::from_secs(2);
    let long = Duration::from_secs(60);
    let mut app = spawn_app_with(|settings| {
        settings.connections.header_read_timeout = long;
        settings.connections.idle_timeout = long;
        settings.connections.request_timeout = request;
        settings.connections.shutdown_timeout = long;
    })
    .await;
    let address = socket_address(&app);
    let secret = app.secret.clone();

    // Act: a body sent a byte at a time; the shutdown begins while it is read.
    let slow_body = tokio::spawn(trickle_after(
        address,
        slow_create(&secret),
        Duration::from_millis(200),
        Duration::from_secs(30),
    ));
    // Until the slow create is in progress (beside the scrape asking).
    eventually(
        "the slow create in progress",
        Duration::from_secs(10),
        async || app.gauge("http_server_active_requests").await >= 2.0,
    )
    .await;
    let running = app.shut_down();
    let kept = slow_body.await.unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(10), running).await;

    // Assert: closed by the request timeout (a loaded machine may close late, never early),
    // not held until the shutdown timeout; and the drain then ends.
    assert!(
        (request - Duration::from_millis(100)..request + Duration::from_secs(3)).contains(&kept),
        "a body sent a byte every 200 ms during the shutdown: {kept:?}"
    );
    assert!(
        drained.is_ok(),
        "the drain did not end after the last request"
    );
}
