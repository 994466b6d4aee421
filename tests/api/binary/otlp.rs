//! Trace export: with an OTLP endpoint set, the binary sends its spans there.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use super::*;

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    let collector = FakeCollector::start();
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());
    let endpoint = format!("http://{}", collector.address);
    let server = Server::start_on_database_with(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // Sent in batches every 100 ms, instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;

    let live = server.client.health_live().send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    // The exporter's protobuf body holds its strings as they are: the service's name, and the
    // name of the request span.
    let contains =
        |body: &[u8], text: &str| body.windows(text.len()).any(|part| part == text.as_bytes());
    let started = Instant::now();
    loop {
        let exported = collector.received.lock().unwrap().clone();
        let request_spans = exported.iter().find(|(_, body)| {
            contains(body, "orders") && contains(body, "request") && contains(body, "/healthz")
        });
        if let Some((line, _)) = request_spans {
            assert!(line.starts_with("POST /v1/traces "), "{line}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no span of the request exported in 10 s: {:?}; log:\n{}",
            exported
                .iter()
                .map(|(line, body)| (line, body.len()))
                .collect::<Vec<_>>(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each request's line (`POST /v1/traces HTTP/1.1`) and body, in the order they came.
type Received = std::sync::Mutex<Vec<(String, Vec<u8>)>>;

/// An OTLP/HTTP collector that answers every export with 200 and keeps what was posted.
struct FakeCollector {
    address: SocketAddr,
    received: std::sync::Arc<Received>,
}

impl FakeCollector {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let received = std::sync::Arc::default();
        let kept = std::sync::Arc::clone(&received);
        // Ends with the test process; it holds nothing but its socket.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = std::sync::Arc::clone(&kept);
                std::thread::spawn(move || Self::serve(stream, &kept));
            }
        });
        Self { address, received }
    }

    /// Reads requests from one connection (the exporter keeps it alive) until it closes.
    fn serve(stream: TcpStream, kept: &Received) {
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut request_line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            kept.lock()
                .unwrap()
                .push((request_line.trim().to_owned(), body));
            writer
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                )
                .unwrap();
        }
    }
}
