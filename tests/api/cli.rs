//! The binary as a user runs it: `orders` with no DATABASE_URL starts its own PostgreSQL,
//! serves the sample data, and shuts everything down cleanly on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::Value;

#[test]
fn openapi_prints_the_committed_spec() {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        include_str!("../../openapi.yaml")
    );
}

#[tokio::test]
async fn serve_without_database_url_runs_a_private_cluster_and_stops_it_on_sigterm() {
    let data_dir =
        std::env::temp_dir().join(format!("orders-cli-test-{}", uuid::Uuid::new_v4().simple()));
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orders"))
        .env_remove("DATABASE_URL")
        .env("ORDERS_DATA_DIR", &data_dir)
        .env("ORDERS_BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // First start: initdb, migrate, seed. Allow for a slow machine.
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            if response.status() == StatusCode::OK {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not become ready"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the server exited early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let order: Value = client
        .get(format!("{base}/orders/223"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        order["datetime"], "2022-11-01T11:11:11.111Z",
        "the sample data is loaded on first start"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exits cleanly: {status}");
    assert!(
        !data_dir.join("postgres/postmaster.pid").exists(),
        "PostgreSQL was stopped cleanly (it removes its pid file)"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("the server did not stop within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
