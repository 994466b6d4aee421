//! Start-up: from [`Settings`] to a database and a listening [`Application`], in one place,
//! and back down.

use std::{future::Future, io, net::SocketAddr};

use deadpool_postgres::Pool;
use poem::{Response, endpoint::BoxEndpoint};
use tokio::net::TcpListener;

use crate::{
    app::{
        Admission, AppState, BackgroundWork, Policies,
        key_management::{self, LocalKey},
        waiting_readers::WaitingBounds,
    },
    config::{ConnectionSettings, DatabaseSettings, Settings},
    domain::RateLimit,
    embedded_postgres::{self, Cluster, Durability, EmbeddedError},
    http,
    server::{self, ServeSettings, Timeouts, open_files},
    storage::{
        self, SessionLimits, connection_string,
        migrations::{self, MigrationError},
        tls::DatabaseTls,
    },
};

/// The database the application talks to, and the private cluster behind it, if any.
pub struct Database {
    pub pool: Pool,
    /// Opens sessions beside the pool, connecting as it does.
    pub connector: storage::Connector,
    cluster: Option<Cluster>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL is not a valid connection string")]
    BadDatabaseUrl(#[source] connection_string::DatabaseUrlError),
    #[error("DATABASE_URL's TLS settings cannot be used")]
    DatabaseTls(#[source] storage::tls::TlsSetupError),
    #[error("the private PostgreSQL cluster could not start")]
    Embedded(#[from] EmbeddedError),
    #[error("could not create the database on the private cluster")]
    CreateDatabase(#[source] storage::StoreError),
    #[error("could not migrate the database")]
    Migrate(#[from] MigrationError),
    #[error("could not seed the database")]
    Seed(#[source] storage::StoreError),
    #[error(transparent)]
    Keys(#[from] crate::app::key_management::KeysError),
    #[error("could not listen on {0}")]
    Bind(SocketAddr, #[source] io::Error),
    #[error("could not install the SIGINT and SIGTERM handlers")]
    Signals(#[source] io::Error),
    #[error("the server stopped with an error")]
    Serve(#[source] io::Error),
}

/// The name of the database on the private cluster.
const EMBEDDED_DATABASE: &str = "orders";
/// The name it has while it is being built.
const EMBEDDED_DATABASE_BUILDING: &str = "orders_building";

impl Database {
    /// Connects to the configured database, starting the private cluster first when there is
    /// no `DATABASE_URL`.
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        match &settings.database {
            DatabaseSettings::External(url) => {
                let (config, tls) =
                    connection_string::parse(url.expose()).map_err(StartError::BadDatabaseUrl)?;
                let tls = DatabaseTls::new(&tls).map_err(StartError::DatabaseTls)?;
                Ok(Self {
                    connector: storage::Connector::serving(
                        config.clone(),
                        &tls,
                        session_limits(settings),
                    ),
                    pool: storage::connect_serving_pool(
                        config,
                        &tls,
                        settings.db_pool_size,
                        session_limits(settings),
                    ),
                    cluster: None,
                })
            }
            DatabaseSettings::Embedded { data_dir } => {
                let data_dir = data_dir.join("postgres");
                tracing::info!(data_dir = %data_dir.display(), "starting the private PostgreSQL cluster");
                let cluster = Cluster::start(&data_dir, Durability::Durable).await?;
                if let Err(error) = create_embedded_database(&cluster).await {
                    // Stopped before returning, so a quick retry does not find it shutting down.
                    stop_cluster(cluster).await;
                    return Err(error);
                }
                Ok(Self {
                    connector: storage::Connector::serving(
                        cluster.connection_config(EMBEDDED_DATABASE),
                        &DatabaseTls::Off,
                        session_limits(settings),
                    ),
                    pool: storage::connect_serving_pool(
                        cluster.connection_config(EMBEDDED_DATABASE),
                        &DatabaseTls::Off,
                        settings.db_pool_size,
                        session_limits(settings),
                    ),
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// Like [`Database::open`], but for commands that run beside a serving instance
    /// (`orders keys`): when the private cluster is running already, under a server started
    /// from the same data folder, its database is used as it is.
    pub async fn open_beside_server(settings: &Settings) -> Result<Self, StartError> {
        if let DatabaseSettings::Embedded { data_dir } = &settings.database {
            let cluster_dir = data_dir.join("postgres");
            // Without its password (a cluster an older version made, running still), it is
            // started as if none ran, which then says that one does.
            if embedded_postgres::has_socket(&cluster_dir)
                && let Ok(config) =
                    embedded_postgres::connection_config(&cluster_dir, EMBEDDED_DATABASE)
            {
                let pool = storage::connect_pool(config.clone(), 1);
                if storage::ping(&pool).await.is_ok() {
                    return Ok(Self {
                        pool,
                        connector: storage::Connector::plain(config),
                        cluster: None,
                    });
                }
                pool.close();
            }
        }
        Self::open(settings).await
    }

    /// Closes the pool and stops the private cluster, if there is one.
    pub async fn close(self) {
        self.pool.close();
        if let Some(cluster) = self.cluster {
            stop_cluster(cluster).await;
        }
    }
}

/// Stops the private cluster and waits until it has stopped; failing that, says so in the log.
async fn stop_cluster(cluster: Cluster) {
    tracing::info!("stopping the private PostgreSQL cluster");
    if let Err(error) = cluster.stop().await {
        tracing::error!(%error, "the private PostgreSQL cluster did not stop cleanly");
    }
}

/// Gives the private cluster its database, migrated and loaded with the sample data, unless
/// it has it already. The database is built under another name and renamed when complete, so
/// a first start that is interrupted leaves nothing half made: the next one starts over.
async fn create_embedded_database(cluster: &Cluster) -> Result<(), StartError> {
    let admin = cluster.connection_config("postgres");
    let database_error = |error| StartError::CreateDatabase(storage::StoreError::from(error));
    if embedded_postgres::database_exists(&admin, EMBEDDED_DATABASE)
        .await
        .map_err(database_error)?
    {
        return Ok(());
    }
    tracing::info!("creating the database, with the sample data");
    embedded_postgres::create_database(&admin, EMBEDDED_DATABASE_BUILDING, true)
        .await
        .map_err(database_error)?;
    let pool = storage::connect_pool(cluster.connection_config(EMBEDDED_DATABASE_BUILDING), 1);
    storage::migrations::run(&pool).await?;
    storage::seed::load(&pool).await.map_err(StartError::Seed)?;
    // A database cannot be renamed while anyone is connected to it.
    pool.close();
    embedded_postgres::rename_database(&admin, EMBEDDED_DATABASE_BUILDING, EMBEDDED_DATABASE)
        .await
        .map_err(database_error)
}

/// The HTTP server, bound and ready to run, with the database it serves from.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    /// The metrics' own listener and its address, when they are served apart from the API.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    state: AppState,
    background: BackgroundWork,
    serve: ServeSettings,
    database: Database,
}

impl Application {
    /// Everything an instance needs, built from `settings` in one place: the database (the
    /// private cluster when there is no `DATABASE_URL`), migrated when `settings.migrate` says
    /// so, the state every operation runs against, its background work, and the listening
    /// socket. Bind to port 0 to get a free port; [`Application::address`] tells which one.
    pub async fn build(settings: &Settings) -> Result<Self, StartError> {
        let database = Database::open(settings).await?;
        match Self::build_on(database, settings).await {
            Ok(app) => Ok(app),
            Err((database, error)) => {
                database.close().await;
                Err(error)
            }
        }
    }

    async fn build_on(
        database: Database,
        settings: &Settings,
    ) -> Result<Self, (Database, StartError)> {
        if settings.migrate {
            match migrations::run(&database.pool).await {
                Ok(applied) => tracing::info!(applied, "migrations are up to date"),
                Err(error) => return Err((database, error.into())),
            }
        }
        if let DatabaseSettings::Embedded { data_dir } = &settings.database
            && let Err(error) = provide_local_key(&database.pool, data_dir).await
        {
            return Err((database, error));
        }
        let listener = match TcpListener::bind(settings.bind).await {
            Ok(listener) => listener,
            Err(error) => return Err((database, StartError::Bind(settings.bind, error))),
        };
        let address = listener.local_addr().unwrap_or(settings.bind);
        let metrics_listener = match settings.metrics_bind {
            None => None,
            Some(bind) => match TcpListener::bind(bind).await {
                Ok(listener) => {
                    let address = listener.local_addr().unwrap_or(bind);
                    Some((listener, address))
                }
                Err(error) => return Err((database, StartError::Bind(bind, error))),
            },
        };
        let serve = serve_settings(&settings.connections);
        let mut state = AppState::new(
            database.pool.clone(),
            database.connector.clone(),
            &policies(settings),
        );
        state.fit_feed_wait_into(serve.timeouts.request);
        state.metrics_served_apart = metrics_listener.is_some();
        let background = state.start_background_work().await;
        Ok(Self {
            listener,
            address,
            metrics_listener,
            state,
            background,
            serve,
            database,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the metrics are served apart from the API, if they are (`ORDERS_METRICS_BIND`).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, address)| *address)
    }

    /// The state the instance's operations run against (its key cache, its metrics, ...).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: readiness answers 503 at once, the
    /// listener closes (after the shutdown delay), idle connections close, and requests in
    /// progress finish (up to the shutdown timeout); then the database is closed (and the
    /// private cluster stopped). See [`server`].
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        self.run_wrapped_until(shutdown, |endpoint| endpoint).await
    }

    /// [`Application::run_until`], with `wrap` around the service's endpoint, outermost: for
    /// an embedder that watches every answer (the tests hold each against the spec).
    pub async fn run_wrapped_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        wrap: impl FnOnce(BoxEndpoint<'static, Response>) -> BoxEndpoint<'static, Response>,
    ) -> Result<(), StartError> {
        let open_file_limit = open_files::raise_soft_limit();
        let cap = self.serve.max_connections.unwrap_or_else(|| {
            open_files::default_connection_cap(open_file_limit, self.state.pool.status().max_size)
        });
        tracing::info!(
            address = %self.address,
            max_connections = cap,
            header_read_timeout_ms = self.serve.timeouts.header_read.as_millis() as u64,
            idle_timeout_ms = self.serve.timeouts.idle.as_millis() as u64,
            request_timeout_ms = self.serve.timeouts.request.as_millis() as u64,
            "serving"
        );
        // The metrics' listener serves until the API's drain is over, so that a scrape
        // still sees an instance that is shutting down.
        let (api_drained, metrics_stop) = tokio::sync::oneshot::channel::<()>();
        let metrics = self.metrics_listener.map(|(listener, address)| {
            tracing::info!(%address, "serving the metrics apart from the API");
            tokio::spawn(server::serve_metrics(
                listener,
                http::metrics_app(self.state.clone()),
                self.serve.timeouts,
                self.serve.shutdown_timeout,
                async {
                    let _ = metrics_stop.await;
                },
            ))
        });
        let draining = self.state.draining.clone();
        let feed_waiting = self.state.feed.waiting.clone();
        let served = server::serve(
            self.listener,
            wrap(http::app(self.state)),
            self.serve,
            cap,
            draining,
            feed_waiting,
            shutdown,
        )
        .await;
        drop(api_drained);
        if let Some(metrics) = metrics {
            match metrics.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "the metrics' listener stopped with an error")
                }
                Err(error) => tracing::error!(%error, "the metrics' listener's task failed"),
            }
        }
        drop(self.background);
        self.database.close().await;
        served.map_err(StartError::Serve)
    }
}

/// What each serving session of the database may take.
fn session_limits(settings: &Settings) -> SessionLimits {
    SessionLimits {
        statement_timeout: settings.db_statement_timeout,
        lock_timeout: settings.db_lock_timeout,
    }
}

/// How the server bounds its connections and its shutdown.
fn serve_settings(connections: &ConnectionSettings) -> ServeSettings {
    ServeSettings {
        timeouts: Timeouts {
            header_read: connections.header_read_timeout,
            idle: connections.idle_timeout,
            request: connections.request_timeout,
        },
        max_connections: connections.max_connections,
        shutdown_delay: connections.shutdown_delay,
        shutdown_timeout: connections.shutdown_timeout,
    }
}

/// What the instance's operations are configured with.
fn policies(settings: &Settings) -> Policies {
    Policies {
        idempotency_retention: settings.idempotency_retention,
        event_retention: settings.event_retention,
        answer_bound: session_limits(settings).answer_bound(),
        key_refresh_interval: settings.key_refresh_interval,
        default_rate: settings
            .rate_limit
            .map(|rate| RateLimit::new(rate.per_second, rate.burst)),
        shared_connections: settings.db_shared_connections,
        admission: Admission {
            max_in_flight: settings.max_in_flight,
            max_queue_wait: settings.max_queue_wait,
            max_queued: settings.max_queued,
            anonymous_refusals_per_second: settings.anonymous_refusals_per_second,
        },
        feed_waiting: WaitingBounds {
            per_instance: settings.feed_max_waiting,
            per_key: settings.feed_max_waiting_per_key,
        },
    }
}

/// The private cluster's one-command start: a key to call it with, in a file beside it.
async fn provide_local_key(pool: &Pool, data_dir: &std::path::Path) -> Result<(), StartError> {
    let file = key_management::local_key_file(data_dir);
    let file = file.display();
    match key_management::ensure_local_key(pool, data_dir).await? {
        LocalKey::Reused => tracing::info!(%file, "the API key `local` is in {file}"),
        LocalKey::Created => {
            tracing::info!(%file, "created the API key `local` (every scope); its secret is in {file}")
        }
        LocalKey::Reissued => tracing::warn!(
            %file,
            "{file} was missing or out of date: gave the API key `local` a new secret, now in {file}"
        ),
        LocalKey::Revoked => tracing::warn!(
            %file,
            "the API key `local` is revoked, so {file} works no more; create a key with `orders keys create`"
        ),
    }
    Ok(())
}

/// Installs handlers for SIGINT and SIGTERM now, and returns a future that completes on
/// either. Installed before serving starts, not when the future is first polled: the server
/// polls it in turn with accepting connections, so it may first be polled only after the first requests
/// have been answered, and a signal in that moment would meet no handler and kill the process
/// without draining.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: signal received");
    })
}
