//! A network between the service and its database whose answers are slow to come back: a
//! proxy that passes what the service sends at once and holds each reply of the database for
//! as long as the test says. A lock or a paused server slows a statement down before it has
//! read anything; this slows it down after, as a long way to the database does, so that what
//! the service is told describes the database as it was a while ago.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixStream},
    sync::mpsc,
    task::{JoinHandle, JoinSet},
    time::Instant,
};

use super::database::connection_string;

/// The proxy: it serves until dropped.
pub struct SlowReplies {
    address: SocketAddr,
    upstream: tokio_postgres::Config,
    /// How long each reply is held, in milliseconds, from when it arrives from the database.
    delay_ms: Arc<AtomicU64>,
    accepting: JoinHandle<()>,
}

impl SlowReplies {
    /// A proxy to the database `upstream` names, passing replies on at once until told
    /// otherwise. Starts on the current runtime.
    pub fn start(upstream: tokio_postgres::Config) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let accepting = tokio::spawn({
            let (upstream, delay_ms) = (upstream.clone(), Arc::clone(&delay_ms));
            async move {
                // Dropped with the task, which ends every connection's own.
                let mut connections = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    connections.spawn(relay(client, upstream.clone(), Arc::clone(&delay_ms)));
                }
            }
        });
        Self {
            address,
            upstream,
            delay_ms,
            accepting,
        }
    }

    /// The connection string of the database, reached through the proxy.
    pub fn connection_string(&self) -> String {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.address.ip().to_string())
            .port(self.address.port());
        if let Some(user) = self.upstream.get_user() {
            config.user(user);
        }
        if let Some(password) = self.upstream.get_password() {
            config.password(password);
        }
        if let Some(dbname) = self.upstream.get_dbname() {
            config.dbname(dbname);
        }
        format!("{} sslmode=disable", connection_string(&config))
    }

    /// Holds each reply that arrives from now on for `delay` before passing it on.
    pub fn delay_replies(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for SlowReplies {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// The database's end of one connection, over TCP or its Unix socket, as the config names it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

async fn connect(upstream: &tokio_postgres::Config) -> Box<dyn Stream> {
    let port = upstream.get_ports().first().copied().unwrap_or(5432);
    match upstream.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(folder)) => Box::new(
            UnixStream::connect(folder.join(format!(".s.PGSQL.{port}")))
                .await
                .unwrap(),
        ),
        Some(tokio_postgres::config::Host::Tcp(host)) => {
            Box::new(TcpStream::connect((host.as_str(), port)).await.unwrap())
        }
        None => panic!("the database's config names no host"),
    }
}

/// Relays one connection: what the client sends goes on at once, what the database answers
/// goes on once it has been held for the delay in force when it arrived, in its order.
async fn relay(client: TcpStream, upstream: tokio_postgres::Config, delay_ms: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let server = connect(&upstream).await;
    let (mut client_reads, mut client_writes) = client.into_split();
    let (mut server_reads, mut server_writes) = tokio::io::split(server);
    let requests = async {
        let _ = tokio::io::copy(&mut client_reads, &mut server_writes).await;
        let _ = server_writes.shutdown().await;
    };
    let (held, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let replies_in = async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = server_reads.read(&mut buffer).await {
            let delay = Duration::from_millis(delay_ms.load(Ordering::Relaxed));
            if held
                .send((Instant::now() + delay, buffer[..read].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let replies_out = async {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if client_writes.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = client_writes.shutdown().await;
    };
    tokio::join!(requests, replies_in, replies_out);
}
