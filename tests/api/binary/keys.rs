//! `orders keys`: creating, listing and revoking API keys as an operator does, and what a
//! server on that database makes of them.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn keys_create_list_and_revoke_manage_the_keys_a_server_on_that_database_accepts() {
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());
    let created_minute = this_minute();

    let (status, stdout, stderr) = keys_command(
        &url,
        &[
            "create",
            "--name",
            "ci-bot",
            "--scope",
            "orders:read",
            "--scope",
            "orders:write",
        ],
    );
    assert_eq!(status, Some(0), "{stderr}");
    let secret = stdout.lines().last().unwrap().to_owned();
    assert!(secret.starts_with("ord_"), "{stdout}");
    assert!(
        !secret.contains(' '),
        "the secret alone on the last line: {stdout:?}"
    );
    assert!(
        !stderr.contains(&secret),
        "the secret is not logged: {stderr}"
    );
    let row = listed(&url, "ci-bot").expect("ci-bot is listed");
    assert_eq!(row[1], "orders:read,orders:write");
    assert!(listed_minute(&row[2]) >= created_minute && listed_minute(&row[2]) <= this_minute());
    assert_eq!(
        (row[3].as_str(), row[4].as_str()),
        ("-", "-"),
        "never used, not revoked"
    );
    assert_eq!(
        listed(&url, "local"),
        None,
        "with DATABASE_URL no local key is made"
    );

    let server = Server::start_on_database(&url).await;
    let used_minute = this_minute();
    assert_eq!(server.get_orders(&secret).await, StatusCode::OK);
    let write_services = crate::helpers::http_client_with_key(&secret)
        .post(format!("{}/services", server.base()))
        .json(&json!({ "name": "Calibration" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        write_services.status(),
        StatusCode::FORBIDDEN,
        "not its scope"
    );

    // The refresher writes uses down every couple of seconds.
    let started = Instant::now();
    let row = loop {
        let row = listed(&url, "ci-bot").unwrap();
        if row[3] != "-" {
            break row;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the use was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let last_used = listed_minute(&row[3]);
    assert!(
        last_used >= used_minute && last_used <= this_minute(),
        "last used {last_used}, used at {used_minute}"
    );
    assert_eq!(row[4], "-");
    let (_, list_out, list_err) = keys_command(&url, &["list"]);
    assert!(
        !list_out.contains(&secret) && !list_err.contains(&secret),
        "list shows no secret"
    );

    let (status, stdout, stderr) = keys_command(&url, &["revoke", "ci-bot"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains("ci-bot"), "{stdout}");
    let started = Instant::now();
    while server.get_orders(&secret).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still accepted after revoking"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = listed(&url, "ci-bot").expect("a revoked key stays listed");
    assert!(listed_minute(&row[4]) <= this_minute(), "{row:?}");

    let log = server.log_text();
    assert!(!log.contains(&secret), "the secret is never logged:\n{log}");
    let named = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|line| {
            line["message"] == "request served"
                && line["status"] == 200
                && (line["key"] == "ci-bot" || line["span"]["key"] == "ci-bot")
        });
    assert!(named, "the request log names the key:\n{log}");
}

#[tokio::test]
async fn keys_create_with_a_rate_lists_it_and_a_server_holds_the_key_to_it() {
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());

    let (status, stdout, stderr) = keys_command(
        &url,
        &[
            "create",
            "--name",
            "metered",
            "--scope",
            "orders:read",
            "--rate",
            "1",
            "--burst",
            "2",
        ],
    );
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.contains("limited to 1 request a second, in bursts of up to 2"),
        "{stdout}"
    );
    let secret = stdout.lines().last().unwrap().to_owned();
    let (status, _, stderr) = keys_command(
        &url,
        &["create", "--name", "free", "--scope", "orders:read"],
    );
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(listed(&url, "metered").unwrap()[5], "1/s,burst=2");
    assert_eq!(
        listed(&url, "free").unwrap()[5],
        "-",
        "no limit of its own: the instance's applies"
    );
    for (args, complaint) in [
        (&["--rate", "0"][..], "whole number"),
        (&["--rate", "many"][..], "whole number"),
        (&["--burst", "3"][..], "--rate"),
    ] {
        let mut create = vec!["create", "--name", "refused", "--scope", "orders:read"];
        create.extend_from_slice(args);
        let (status, _, stderr) = keys_command(&url, &create);
        assert_eq!(status, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
    assert_eq!(listed(&url, "refused"), None, "nothing was created");

    let server = Server::start_on_database(&url).await;
    let started = Instant::now();
    let mut served = 0;
    let refused = loop {
        let status = server.get_orders(&secret).await;
        if status != StatusCode::OK {
            break status;
        }
        served += 1;
        assert!(served <= 10, "the key's limit was not applied");
    };
    assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        (2..=2 + started.elapsed().as_secs() + 1).contains(&served),
        "served {served} of a burst of 2"
    );
}

#[tokio::test]
async fn keys_refuses_bad_names_scopes_and_unknown_or_taken_names_with_status_2() {
    let database = crate::helpers::unmigrated_database().await;
    let url = crate::helpers::connection_string(database.config());
    let (status, _, stderr) = keys_command(
        &url,
        &["create", "--name", "taken", "--scope", "orders:read"],
    );
    assert_eq!(status, Some(0), "{stderr}");

    for (args, says) in [
        (
            &["create", "--name", "Bad Name", "--scope", "orders:read"][..],
            "Bad Name",
        ),
        (
            &["create", "--name", "ok", "--scope", "orders:delete"][..],
            "orders:delete",
        ),
        (&["create", "--name", "ok"][..], "--scope"),
        (
            &["create", "--name", "taken", "--scope", "orders:write"][..],
            "exists already",
        ),
        (&["revoke", "nobody"][..], "no key is named \"nobody\""),
    ] {
        let (status, stdout, stderr) = keys_command(&url, args);
        assert_eq!(status, Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(says),
            "{args:?}: stderr says {says:?}: {stderr}"
        );
        assert!(
            !stdout.contains("ord_"),
            "{args:?}: no secret printed: {stdout}"
        );
    }
    let (_, stdout, _) = keys_command(&url, &["list"]);
    let names: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(names, ["taken"], "nothing was created or changed");
    let row = listed(&url, "taken").unwrap();
    assert_eq!((row[1].as_str(), row[4].as_str()), ("orders:read", "-"));
}

/// `orders keys ...` against the database `url`: its exit status, stdout and stderr.
fn keys_command(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", url)
        .env("ORDERS_DATA_DIR", data_dir())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The row of `keys list` for the key `name`, as its cells (`-` for a time not yet set).
fn listed(url: &str, name: &str) -> Option<Vec<String>> {
    let (status, stdout, stderr) = keys_command(url, &["list"]);
    assert_eq!(status, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .collect();
    let header: Vec<&str> = header.iter().map(|cell| cell.trim()).collect();
    assert_eq!(
        header,
        ["NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED", "RATE"],
        "{stdout}"
    );
    lines
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells[0] == name)
}

/// A time as `keys list` shows it, to the minute.
fn listed_minute(cell: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::NaiveDateTime::parse_from_str(cell, "%Y-%m-%d %H:%MZ")
        .unwrap_or_else(|error| panic!("{cell:?} is a time to the minute: {error}"))
        .and_utc()
}

fn this_minute() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    chrono::Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap()
}
