//! The HTTP server under the API: it accepts connections, serves each with hyper's HTTP/1.1
//! and hands requests to the poem endpoint, and on shutdown drains.
//!
//! poem's own server is not used: it ignores accept errors (at the open-file limit it spins),
//! has no header-read timeout, and its idle timeout counts from the last byte read, so a
//! client sending a byte every few seconds keeps a connection forever. Here:
//! - the soft open-file limit is raised to the hard limit at start ([`open_files`]), and the
//!   connections open at once are capped below it, the longest-waiting one giving way to a
//!   newcomer at the cap, else the change feed reader that has waited longest, answered at
//!   once ([`connections`]);
//! - each connection is closed when its next request head does not arrive whole within the
//!   header-read timeout of its first byte, or no request begins within the idle timeout of
//!   its last answer, and a request is cut off when it takes longer than the request timeout
//!   (its head to the end of its answer). hyper's own `header_read_timeout` is not used: it starts when the
//!   connection becomes idle, so it would cap keep-alive at the header-read timeout;
//! - an accept error (too many open files, out of memory) is logged, at most once every
//!   [`ACCEPT_ERROR_LOG_INTERVAL`], and accepting resumes after [`ACCEPT_BACKOFF`];
//! - on shutdown the instance says it is draining at once (readiness answers 503
//!   `SHUTTING_DOWN`), keeps serving for the shutdown delay (0 by default), then closes the
//!   listener so new connections are refused, closes every connection that has no request in
//!   progress, lets the requests in progress finish, each on a connection then closed, and
//!   returns as soon as the last is done, or when the shutdown timeout runs out.
//!
//! The metrics, when they have an address of their own, are served the same way on a listener
//! of their own ([`serve_metrics`]), with a small cap of their own, until the API's drain is
//! over.
//!
//! Only HTTP/1.1 is served: every client of this internal API speaks it, and HTTP/2 without TLS
//! would need its own bounds for streams and frames.

pub mod connections;
pub mod open_files;

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use poem::{
    Endpoint, IntoResponse,
    endpoint::{BoxEndpoint, DynEndpoint},
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::net::{TcpListener, TcpStream};

pub use self::connections::Timeouts;
use self::connections::{BusyBody, Connection, Connections, Next, Reason, Watched};
use crate::{
    app::{
        Draining,
        waiting_readers::{ConnectionId, WaitingReaders},
    },
    http::problem::{ApiError, ErrorCode},
};

type AnyEndpoint = dyn DynEndpoint<Output = poem::Response>;

/// How long accepting pauses after an accept error that is not about one connection.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log line per this long about accept errors, saying how many there were.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The longest request head (request line and headers) read: what common proxies allow in
/// front of a service (AWS's load balancers take a 16 KiB request line; nginx, 8 KiB lines).
/// No request of this API needs more than a few hundred bytes.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// How the server bounds its connections and its shutdown.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    pub timeouts: Timeouts,
    /// Most connections open at once; `None`: derived from the open-file limit.
    pub max_connections: Option<usize>,
    /// How long, after the shutdown signal, the instance goes on serving while readiness
    /// answers 503, for load balancers to notice before the listener closes.
    pub shutdown_delay: Duration,
    /// How long requests in progress may take to finish once draining begins.
    pub shutdown_timeout: Duration,
}

/// Serves `endpoint` on `listener` until `shutdown` completes, then drains (see the module
/// docs). `cap` is the most connections open at once; at it, with every connection busy, the
/// wait of one of `feed_waiting` is ended to free its connection.
pub async fn serve(
    listener: TcpListener,
    endpoint: BoxEndpoint<'static, poem::Response>,
    settings: ServeSettings,
    cap: usize,
    draining: Draining,
    feed_waiting: WaitingReaders,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let connections = Connections::new(cap, settings.timeouts, Some(feed_waiting));
    let stop = async {
        shutdown.await;
        draining.begin();
        tracing::info!(
            delay_ms = settings.shutdown_delay.as_millis() as u64,
            "shutting down: readiness now answers 503; the listener closes after the delay"
        );
        tokio::time::sleep(settings.shutdown_delay).await;
    };
    accept_until(listener, endpoint, &connections, stop).await?;
    draining.listener_closed();
    tracing::info!(
        open_connections = connections.count(),
        "shutting down: the listener is closed; closing idle connections and finishing requests in progress"
    );
    drain(&connections, settings.shutdown_timeout, "shutting down").await;
    Ok(())
}

/// The most connections open at once on the metrics' own listener: a scraper or two needs a
/// connection or two each; a newcomer past it closes the connection idle longest.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// Serves `endpoint` (the metrics alone) on a listener of its own, with the API's `timeouts`,
/// until `shutdown` completes; then closes the listener and lets scrapes in progress finish,
/// for at most `shutdown_timeout`. It has nothing of the API's drain: no readiness to turn,
/// no delay.
pub async fn serve_metrics(
    listener: TcpListener,
    endpoint: BoxEndpoint<'static, poem::Response>,
    timeouts: Timeouts,
    shutdown_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let connections = Connections::new(METRICS_MAX_CONNECTIONS, timeouts, None);
    accept_until(listener, endpoint, &connections, shutdown).await?;
    drain(
        &connections,
        shutdown_timeout,
        "the metrics' listener is closed",
    )
    .await;
    Ok(())
}

/// Accepts connections on `listener` and serves `endpoint` on each, within `connections`'
/// bounds, until `stop` completes; then closes the listener.
async fn accept_until(
    listener: TcpListener,
    endpoint: BoxEndpoint<'static, poem::Response>,
    connections: &Arc<Connections>,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let endpoint: Arc<AnyEndpoint> = Arc::from(endpoint);
    let local = listener.local_addr()?;
    tokio::pin!(stop);
    let mut accept_errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_errors.note(&error);
                if !is_about_one_connection(&error) {
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
                continue;
            }
        };
        tokio::select! {
            () = &mut stop => break,
            () = connections.make_room() => {}
        }
        let connection = connections.open();
        let task = tokio::spawn(serve_connection(
            socket,
            local,
            remote,
            Arc::clone(&endpoint),
            Arc::clone(&connection),
        ));
        connection.set_abort_handle(task.abort_handle());
    }
    Ok(())
}

/// Closes every connection with nothing in progress, lets the requests in progress finish, and
/// returns once none is left, or at `timeout`, cutting off those still going. `phase` begins
/// its log lines.
async fn drain(connections: &Connections, timeout: Duration, phase: &str) {
    let started = Instant::now();
    connections.close_all();
    if tokio::time::timeout(timeout, connections.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open_connections = connections.count(),
            timeout_ms = timeout.as_millis() as u64,
            "{phase}: requests still in progress after the shutdown timeout; closing them"
        );
        connections.abort_all();
    }
    tracing::info!(
        drain_ms = started.elapsed().as_millis() as u64,
        "{phase}: every connection is closed"
    );
}

/// Errors that concern only the connection being accepted: the next accept may well succeed.
fn is_about_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Accept errors, logged at most once per [`ACCEPT_ERROR_LOG_INTERVAL`] with how many came
/// since the last line.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn note(&mut self, error: &io::Error) {
        self.unlogged += 1;
        if self
            .last_logged
            .is_some_and(|at| at.elapsed() < ACCEPT_ERROR_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            %error,
            errors = self.unlogged,
            backoff_ms = ACCEPT_BACKOFF.as_millis() as u64,
            "could not accept a connection; accepting again shortly"
        );
        self.last_logged = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// Serves one connection until the client closes it, it times out, or it is asked to close.
async fn serve_connection(
    socket: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    endpoint: Arc<AnyEndpoint>,
    connection: Arc<Connection>,
) {
    // Answers are small and written at once; waiting to fill a packet only adds latency.
    let _ = socket.set_nodelay(true);
    let service = service_fn({
        let connection = Arc::clone(&connection);
        let connection_id = connection.id;
        move |request: hyper::Request<hyper::body::Incoming>| {
            let busy = connection.begin_request();
            let endpoint = Arc::clone(&endpoint);
            async move {
                let mut request = poem::Request::from((
                    request,
                    LocalAddr(local.into()),
                    RemoteAddr(remote.into()),
                    Scheme::HTTP,
                ));
                // For a change feed reader's wait, which the cap may end (see `connections`).
                request.extensions_mut().insert(ConnectionId(connection_id));
                // A task of its own: a request sent whole is handled whole, even if the client
                // hangs up before its answer (a create must finish, or roll back, as one).
                let handled = tokio::spawn(async move {
                    let response: hyper::Response<BoxBody<Bytes, io::Error>> =
                        endpoint.get_response(request).await.into();
                    response.map(|body| BusyBody::new(body, Some(busy)))
                });
                let response = handled.await.unwrap_or_else(|error| {
                    tracing::error!(%error, "a request's task failed");
                    let response: hyper::Response<BoxBody<Bytes, io::Error>> =
                        ApiError::new(ErrorCode::Internal).into_response().into();
                    response.map(|body| BusyBody::new(body, None))
                });
                Ok::<_, Infallible>(response)
            }
        }
    });
    let io = TokioIo::new(Watched::new(socket, Arc::clone(&connection)));
    let served = http1::Builder::new()
        // Timed here instead (see the module docs).
        .header_read_timeout(None)
        // Bounds what one connection's unfinished head can hold in memory; a longer head is
        // refused by hyper's parser with a bare 431 and the connection closed (hyper's own
        // 64 KiB bound on a URI, and its 414, lie past it).
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        // A client may send its request whole and shut its side at once: answer it anyway
        // (the request timeout still bounds it).
        .half_close(true)
        .serve_connection(io, service);
    tokio::pin!(served);
    let _counted = Counted(Arc::clone(&connection));
    let mut finishing = false;
    loop {
        let woken = connection.woken();
        let deadline = match connection.next(tokio::time::Instant::now()) {
            Next::Serve { deadline } => deadline,
            Next::FinishThenClose { deadline } => {
                if !finishing {
                    // Answers what is in progress, with `connection: close`, then ends.
                    served.as_mut().graceful_shutdown();
                    finishing = true;
                }
                // The request timeout still holds: a request that began just as the close
                // was asked for may be sending its body a byte at a time.
                Some(deadline)
            }
            Next::CloseNow(reason) => {
                match reason {
                    Reason::Requested => {}
                    Reason::TimedOut { reading_head } => tracing::info!(
                        connection = connection.id,
                        %remote,
                        reading_head,
                        "closing a connection that timed out"
                    ),
                }
                break;
            }
        };
        let timer = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(connection = connection.id, %remote, %error, "connection ended with an error");
                }
                break;
            }
            () = woken => {}
            () = timer => {}
        }
    }
}

/// Takes a connection off the count when its task ends, however it ends.
struct Counted(Arc<Connection>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.closed();
    }
}
