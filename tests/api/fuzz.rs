//! The edge under arbitrary input: request lines, headers, queries and bodies made up by
//! proptest, sent as raw bytes through the real HTTP stack to every route and to unknown ones.
//! Whatever arrives, the service never answers 500, never panics, answers within its bounds,
//! and every refusal is problem+json (but for the bare statuses the HTTP library itself gives to
//! what it cannot parse, which the API guide lists). Every answer that reaches the service is
//! also held against the spec when the app is dropped, as in every test.
//!
//! `FUZZ_CASES` sets the number of cases (2,000 by default; more on demand).

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::Value;

use crate::helpers::spawn_app;

/// Longest any answer may take: the answer bound (5 s) and a margin.
const ANSWER_BOUND: Duration = Duration::from_secs(8);

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_000)
}

/// One request as bytes on the wire, and what the fuzz made it of (for the failure message).
#[derive(Debug, Clone)]
struct RawRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl RawRequest {
    fn bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nhost: fuzz\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.chunked {
            head.push_str("transfer-encoding: chunked\r\n");
        } else if !self.body.is_empty() || self.method == "POST" || self.method == "PUT" {
            head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        head.push_str("connection: close\r\n\r\n");
        let mut bytes = head.into_bytes();
        if self.chunked {
            for chunk in self.body.chunks(700) {
                bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        } else {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// A path segment: ids, words of the API, and what a parser may trip on.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,20}",
        "-[0-9]{1,5}",
        "[a-z_-]{1,12}",
        Just("%ff".to_owned()),
        Just("%2F".to_owned()),
        Just("%00".to_owned()),
        Just("..".to_owned()),
        Just("%C3%A9".to_owned()),
        Just("{id}".to_owned()),
        "[!$&'()*+,;=:@a-zA-Z0-9%._~-]{0,30}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let known = prop_oneof![
        Just("/orders"),
        Just("/orders/"),
        Just("/services"),
        Just("/events"),
        Just("/free-slots"),
        Just("/healthz"),
        Just("/readyz"),
        Just("/metrics"),
        Just("/openapi.json"),
        Just("/openapi.yaml"),
        Just("/docs"),
    ]
    .prop_map(str::to_owned);
    let with_id = (prop_oneof![Just("/orders/"), Just("/services/")], segment())
        .prop_map(|(base, id)| format!("{base}{id}"));
    let made_up = proptest::collection::vec(segment(), 0..4)
        .prop_map(|segments| format!("/{}", segments.join("/")));
    prop_oneof![known, with_id, made_up]
}

/// A query of the API's parameter names and others, with values that may be anything.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("page_size".to_owned()),
        Just("page_token".to_owned()),
        Just("after".to_owned()),
        Just("limit".to_owned()),
        Just("wait".to_owned()),
        Just("from".to_owned()),
        Just("to".to_owned()),
        Just("duration".to_owned()),
        Just("service_id".to_owned()),
        "[a-z_%0-9]{1,10}",
    ];
    let value = prop_oneof![
        "[0-9]{1,25}",
        "-[0-9]{1,5}",
        Just("now".to_owned()),
        Just("2031-01-01T00:00:00Z".to_owned()),
        Just("%ff%fe".to_owned()),
        "[!$&'()*+,;=:@a-zA-Z0-9%._~/?-]{0,40}",
    ];
    proptest::collection::vec((name, proptest::option::of(value)), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name}={value}"),
                None => name,
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// Header values: printable, as an HTTP parser takes them.
fn header_value() -> impl Strategy<Value = String> {
    "[ -~]{0,60}".prop_map(|value| value.trim().to_owned())
}

fn headers(secret: String) -> impl Strategy<Value = Vec<(String, String)>> {
    let authorization = prop_oneof![
        3 => Just(format!("Bearer {secret}")),
        1 => header_value().prop_map(|value| format!("Bearer {value}")),
        1 => header_value(),
    ];
    let content_type = prop_oneof![
        Just("application/json".to_owned()),
        Just("application/json; charset=utf-8".to_owned()),
        Just("application/merge-patch+json".to_owned()),
        Just("text/plain".to_owned()),
        header_value(),
    ];
    let precondition = prop_oneof![
        Just("*".to_owned()),
        Just("\"1\"".to_owned()),
        Just("\"1.1\", W/\"2\"".to_owned()),
        Just(String::new()),
        header_value(),
    ];
    (
        proptest::option::weighted(0.8, authorization),
        proptest::option::weighted(0.7, content_type),
        proptest::option::of(precondition.clone()),
        proptest::option::of(precondition),
        proptest::option::of(header_value()),
        proptest::option::weighted(0.1, Just("100-continue".to_owned())),
        proptest::option::of(prop_oneof![
            Just("gzip".to_owned()),
            Just("gzip;q=0, identity;q=0".to_owned()),
            header_value()
        ]),
        proptest::option::weighted(0.2, ("x-[a-z]{1,10}", header_value())),
    )
        .prop_map(
            |(auth, content_type, if_match, if_none_match, key, expect, encoding, other)| {
                let mut headers = Vec::new();
                let mut add = |name: &str, value: Option<String>| {
                    if let Some(value) = value {
                        headers.push((name.to_owned(), value));
                    }
                };
                add("authorization", auth);
                add("content-type", content_type);
                add("if-match", if_match);
                add("if-none-match", if_none_match);
                add("idempotency-key", key);
                add("expect", expect);
                add("accept-encoding", encoding);
                if let Some((name, value)) = other {
                    headers.push((name, value));
                }
                headers
            },
        )
}

/// Bodies: none, bytes, or JSON that looks more or less like what the API takes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let json_value = prop_oneof![
        Just("null".to_owned()),
        "-?[0-9]{1,30}(\\.[0-9]{1,5})?",
        "\"[ -~]{0,20}\"",
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"2031-01-01T08:00:00Z\"".to_owned()),
        Just("[{\"id\": \"1\"}]".to_owned()),
    ];
    let field = prop_oneof![
        Just("datetime".to_owned()),
        Just("totalfee".to_owned()),
        Just("services".to_owned()),
        Just("name".to_owned()),
        "[a-z]{1,8}",
    ];
    let object = proptest::collection::vec((field, json_value), 0..5).prop_map(|members| {
        let members: Vec<String> = members
            .into_iter()
            .map(|(name, value)| format!("\"{name}\": {value}"))
            .collect();
        format!("{{{}}}", members.join(", ")).into_bytes()
    });
    prop_oneof![
        2 => Just(Vec::new()),
        3 => object,
        1 => proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

fn request(secret: String) -> impl Strategy<Value = RawRequest> {
    let method = prop_oneof![
        4 => Just("GET".to_owned()),
        3 => Just("POST".to_owned()),
        3 => Just("PUT".to_owned()),
        2 => Just("DELETE".to_owned()),
        1 => Just("HEAD".to_owned()),
        1 => Just("OPTIONS".to_owned()),
        1 => Just("PATCH".to_owned()),
        1 => "[A-Z]{1,8}",
    ];
    (
        method,
        path(),
        proptest::option::of(query()),
        headers(secret),
        body(),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(method, path, query, headers, body, chunked)| {
            let target = match query {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            RawRequest {
                method,
                target,
                headers,
                body,
                chunked,
            }
        })
}

/// Sends `request` on a new connection and checks its answer.
fn check(address: &str, request: &RawRequest) -> Result<(), TestCaseError> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(ANSWER_BOUND)).unwrap();
    let sent = Instant::now();
    // The server may answer (and close) before the body is all sent.
    let _ = stream.write_all(&request.bytes());
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let took = sent.elapsed();
    prop_assert!(
        read.is_ok() || !answer.is_empty(),
        "no answer within {ANSWER_BOUND:?}: {read:?}"
    );
    prop_assert!(took < ANSWER_BOUND, "answered after {took:?}");
    let mut text = String::from_utf8_lossy(&answer).into_owned();
    // An interim `100 Continue` (asked for, and the request may go on) comes before the answer.
    while text.starts_with("HTTP/1.1 1")
        && let Some((_, rest)) = text.split_once("\r\n\r\n")
    {
        text = rest.to_owned();
    }
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("not an HTTP answer: {head:?}")))?;
    prop_assert!(status != 500 && status < 600, "{status}: {text}");
    let lower = head.to_ascii_lowercase();
    // What the HTTP library answers itself: a bare status, no body, the connection closed.
    let bare = matches!(status, 400 | 431)
        && lower.contains("content-length: 0\r\n")
        && !lower.contains("content-type");
    if status >= 400 && !bare {
        prop_assert!(
            lower.contains("content-type: application/problem+json"),
            "{status} without a problem: {text}"
        );
        if request.method != "HEAD" && !lower.contains("content-encoding") {
            let problem: Value = serde_json::from_str(body)
                .map_err(|error| TestCaseError::fail(format!("{error}: {text}")))?;
            prop_assert!(problem["code"].is_string(), "{problem}");
            prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status)));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_never_get_a_500_a_panic_a_late_answer_or_a_refusal_that_is_not_a_problem()
 {
    let app = spawn_app().await;
    let service = app.create_service("Fuzzed").await;
    app.create_order("2031-01-01T08:00:00Z", 10.0, &[&service])
        .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let secret = app.secret.clone();

    let outcome = tokio::task::spawn_blocking(move || {
        let strategy = request(secret);
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |request| check(&address, &request))
            .map_err(|failure| failure.to_string())
    })
    .await
    .unwrap();

    assert_eq!(outcome, Ok(()));
    // The service is still well.
    assert_eq!(app.get("/healthz").await.status(), reqwest::StatusCode::OK);
}
