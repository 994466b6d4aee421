//! Large answers go out gzipped when the client takes gzip, and nothing else changes.

use std::io::Read;

use flate2::read::GzDecoder;
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// GETs `path` saying `accept_encoding`, and returns the answer's headers and its body as sent.
async fn get_encoded(
    app: &TestApp,
    path: &str,
    accept_encoding: &str,
) -> (header::HeaderMap, Vec<u8>) {
    let response = app
        .http
        .get(app.url(path))
        .header(header::ACCEPT_ENCODING, accept_encoding)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let headers = response.headers().clone();
    (headers, response.bytes().await.unwrap().to_vec())
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    GzDecoder::new(body)
        .read_to_end(&mut plain)
        .expect("a gzip stream");
    plain
}

fn varies_on_accept_encoding(headers: &header::HeaderMap) -> bool {
    headers.get_all(header::VARY).iter().any(|value| {
        value
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    })
}

#[tokio::test]
async fn the_docs_page_and_a_long_list_are_gzipped_for_a_client_that_takes_gzip() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    for day in 1..=28 {
        app.create_order(&format!("2022-12-{day:02}T00:00:00Z"), 1.0, &[&service])
            .await;
    }

    for path in ["/docs", "/orders?page_size=100", "/openapi.json"] {
        let (plain_headers, plain) = get_encoded(&app, path, "identity").await;
        let (headers, sent) = get_encoded(&app, path, "br;q=1.0, gzip;q=0.8").await;

        assert_eq!(plain_headers.get(header::CONTENT_ENCODING), None, "{path}");
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip", "{path}");
        assert!(varies_on_accept_encoding(&headers), "{path}");
        assert!(varies_on_accept_encoding(&plain_headers), "{path}");
        assert!(
            sent.len() * 3 < plain.len(),
            "{path}: {} bytes gzipped from {}",
            sent.len(),
            plain.len()
        );
        assert_eq!(gunzip(&sent), plain, "{path}: the same document");
    }
}

#[tokio::test]
async fn a_client_that_refuses_gzip_or_does_not_name_it_gets_the_plain_body() {
    let app = spawn_app().await;
    let (plain_headers, plain) = get_encoded(&app, "/docs", "identity").await;
    assert!(plain.len() > 100_000, "the docs page is large");
    assert!(varies_on_accept_encoding(&plain_headers));

    for accept_encoding in ["gzip;q=0", "*, gzip;q=0", "br, deflate", "*;q=0"] {
        let (headers, sent) = get_encoded(&app, "/docs", accept_encoding).await;
        assert_eq!(
            headers.get(header::CONTENT_ENCODING),
            None,
            "{accept_encoding}"
        );
        assert_eq!(sent, plain, "{accept_encoding}");
    }
}

#[tokio::test]
async fn an_answer_under_an_etag_or_a_small_one_is_sent_as_it_is() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    // Long enough to be worth compressing, but it carries a strong ETag.
    let services: Vec<String> = {
        let mut ids = vec![service];
        for index in 0..40 {
            ids.push(app.create_service(&format!("Service number {index}")).await);
        }
        ids
    };
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let order = app.create_order("2022-12-01T00:00:00Z", 1.0, &names).await;

    let path = format!("/orders/{}", order.id);
    let (headers, sent) = get_encoded(&app, &path, "gzip").await;
    assert!(headers.contains_key(header::ETAG));
    assert!(sent.len() > 1024, "the order is {} bytes", sent.len());
    assert_eq!(headers.get(header::CONTENT_ENCODING), None);
    let order: Value = serde_json::from_slice(&sent).expect("plain JSON");
    assert_eq!(order["services"].as_array().unwrap().len(), 41);

    let (headers, _) = get_encoded(&app, "/healthz", "gzip").await;
    assert_eq!(
        headers.get(header::CONTENT_ENCODING),
        None,
        "a small answer"
    );
}

/// Sends `method` to `path` with `Accept-Encoding: accept_encoding` and, when given,
/// `If-None-Match: condition`, without a key (the documents need none).
async fn send_document_request(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    accept_encoding: &str,
    condition: Option<&str>,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut request = app
        .anonymous
        .request(method, app.url(path))
        .header(header::ACCEPT_ENCODING, accept_encoding);
    if let Some(condition) = condition {
        request = request.header(header::IF_NONE_MATCH, condition);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn the_spec_and_the_docs_page_answer_head_and_if_none_match_from_the_bytes_a_get_sends() {
    let app = spawn_app().await;
    for path in ["/docs", "/openapi.json", "/openapi.yaml"] {
        // Each representation, and its tag.
        let (plain_headers, plain) = get_encoded(&app, path, "identity").await;
        let (gzip_headers, gzipped) = get_encoded(&app, path, "gzip").await;
        let (again_headers, again) = get_encoded(&app, path, "gzip").await;
        let tag_of = |headers: &header::HeaderMap| {
            headers
                .get(header::ETAG)
                .unwrap_or_else(|| panic!("{path}: an ETag"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        let (plain_tag, gzip_tag) = (tag_of(&plain_headers), tag_of(&gzip_headers));
        assert!(
            plain_tag.starts_with('"') && plain_tag.ends_with('"'),
            "{plain_tag}"
        );
        assert!(
            gzip_tag.starts_with('"') && gzip_tag.ends_with('"'),
            "{gzip_tag}"
        );
        assert_ne!(
            plain_tag, gzip_tag,
            "{path}: two sequences of bytes, two tags"
        );
        assert_eq!(gunzip(&gzipped), plain, "{path}");
        assert_eq!(
            (tag_of(&again_headers), &again),
            (gzip_tag.clone(), &gzipped)
        );

        // HEAD: the GET's headers, each encoding's own, and no body.
        for (accept_encoding, get_headers, body) in [
            ("identity", &plain_headers, &plain),
            ("gzip", &gzip_headers, &gzipped),
        ] {
            let (status, headers, sent) =
                send_document_request(&app, reqwest::Method::HEAD, path, accept_encoding, None)
                    .await;
            assert_eq!(status, StatusCode::OK, "HEAD {path} {accept_encoding}");
            for name in [
                header::ETAG,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::CACHE_CONTROL,
            ] {
                assert_eq!(
                    headers.get(&name),
                    get_headers.get(&name),
                    "HEAD {path} {accept_encoding}: {name}"
                );
            }
            assert_eq!(
                headers[header::CONTENT_LENGTH],
                body.len().to_string().as_str(),
                "HEAD {path} {accept_encoding}"
            );
            assert!(varies_on_accept_encoding(&headers), "HEAD {path}");
            assert_eq!(
                headers.get_all(header::VARY).iter().count(),
                1,
                "HEAD {path}: said once"
            );
            assert!(sent.is_empty(), "HEAD {path}");
        }

        // If-None-Match: 304 when it names the representation the request would get (compared
        // weakly, as RFC 9110 says), with what a cache needs to freshen its copy.
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            for (accept_encoding, tag) in [("gzip", &gzip_tag), ("identity", &plain_tag)] {
                for condition in [
                    tag.clone(),
                    format!("W/{tag}"),
                    format!("\"elsewhere\", {tag}"),
                    "*".to_owned(),
                ] {
                    let said =
                        format!("{method} {path} {accept_encoding} If-None-Match {condition}");
                    let (status, headers, sent) = send_document_request(
                        &app,
                        method.clone(),
                        path,
                        accept_encoding,
                        Some(&condition),
                    )
                    .await;
                    assert_eq!(status, StatusCode::NOT_MODIFIED, "{said}");
                    assert_eq!(headers[header::ETAG], tag.as_str(), "{said}");
                    assert!(varies_on_accept_encoding(&headers), "{said}");
                    assert_eq!(
                        headers[header::CACHE_CONTROL],
                        "public, max-age=300",
                        "{said}"
                    );
                    assert!(sent.is_empty(), "{said}");
                }
            }
        }

        // The other representation's tag, or another's, does not name this one.
        for (accept_encoding, condition, body) in [
            ("gzip", &plain_tag, &gzipped),
            ("identity", &gzip_tag, &plain),
            ("gzip", &"\"elsewhere\"".to_owned(), &gzipped),
        ] {
            let (status, headers, sent) = send_document_request(
                &app,
                reqwest::Method::GET,
                path,
                accept_encoding,
                Some(condition),
            )
            .await;
            let said = format!("GET {path} {accept_encoding} If-None-Match {condition}");
            assert_eq!(status, StatusCode::OK, "{said}");
            assert_eq!(&sent, body, "{said}");
            assert_ne!(headers[header::ETAG], condition.as_str(), "{said}");
        }
    }
}
