//! What a client sees of its connection: whether, and when, the server closed it.

use std::time::{Duration, Instant};

use tokio::{io::AsyncReadExt, net::TcpStream};

/// Whether the server has closed `stream` (end of file, or reset), looking for at most `wait`.
pub async fn is_closed(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0; 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A response (not expected here); keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads until the server closes `stream` and returns how long that took; fails after `limit`.
pub async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    assert!(
        is_closed(stream, limit).await,
        "the connection is still open after {limit:?}"
    );
    started.elapsed()
}
