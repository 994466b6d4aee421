//! The spec and the docs page as the binary serves them: fixed for the life of the process, so
//! asking for them again and again, gzipped, costs it next to nothing.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use flate2::{Compression, write::GzEncoder};
use reqwest::header;

use super::*;
use crate::helpers::{cpu_time_of, cpu_time_of_this_thread};

/// Gzipped `GET /docs` requests measured: enough that the CPU clock's ticks (10 ms) are a small
/// part of what the service would spend compressing each.
const REQUESTS: u32 = 40;

#[tokio::test]
async fn a_gzipped_docs_page_costs_the_service_a_small_fraction_of_compressing_it() {
    // Arrange: the page as sent, and what gzipping it costs here, with the library and the
    // (fastest) level the service compresses answers with, measured on this thread alone.
    let (server, _database) = server_on_a_database_of_its_own(|_| {}).await;
    let client = reqwest::Client::new();
    let docs = format!("{}/docs", server.base());
    let page = client
        .get(&docs)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(page.len() > 1_000_000, "the page is {} bytes", page.len());
    let compressing = cpu_per_round(|| gzip_fast(&page));

    // Act
    let pid = server.child.id();
    let cpu_before = cpu_time_of(pid);
    for _ in 0..REQUESTS {
        let response = client
            .get(&docs)
            .header(header::ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let gzipped = response.bytes().await.unwrap();
        assert!(gzipped.len() * 3 < page.len(), "{} bytes", gzipped.len());
    }
    let serving = (cpu_time_of(pid) - cpu_before) / REQUESTS;

    // Assert: compressing the page for each request would cost about as much as here.
    println!(
        "CPU per gzipped GET /docs: {serving:?}; gzipping the page once here: {compressing:?}"
    );
    assert!(
        serving * 5 < compressing,
        "a gzipped GET /docs took {serving:?} of the service's CPU; gzipping the page takes \
         {compressing:?}"
    );
}

/// The CPU time of one call of `work` on this thread, over enough calls for the clock's ticks.
fn cpu_per_round(mut work: impl FnMut() -> Vec<u8>) -> Duration {
    let (cpu_before, started) = (cpu_time_of_this_thread(), Instant::now());
    let mut rounds = 0;
    while cpu_time_of_this_thread() - cpu_before < Duration::from_millis(300) {
        std::hint::black_box(work());
        rounds += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{rounds} rounds"
        );
    }
    (cpu_time_of_this_thread() - cpu_before) / rounds
}

fn gzip_fast(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}
