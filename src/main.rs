//! `orders`: serve the API, migrate, seed, or print the spec. See `orders --help`.

use std::process::ExitCode;

use clap::Parser;
use orders::{
    app::{
        AppState,
        authentication::KeyRing,
        key_management::{self, KeysError, LocalKey},
    },
    config::{self, Cli, Command, DatabaseSettings, KeysCommand, Settings},
    domain::RateLimit,
    http::{self, problem::error_chain},
    startup::{Application, Database, StartError, shutdown_signal},
    storage::{self, api_keys::Revoked, migrations},
    telemetry,
};

/// jemalloc rather than the system's allocator. Every request allocates and frees many small
/// buffers on two worker threads: with glibc's allocator that took a sixth of the service's CPU
/// under load (much of it consolidating its free lists), and memory freed after a burst stayed
/// with the process. Measured in one run, GET one order at 256 connections: 107 us of the
/// service's CPU a request with glibc, 70 us with jemalloc (mimalloc, whose settings can only
/// be made before the process starts, held 32 MiB idle).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: memory freed and not used again within a second
/// is handed back to the system by a thread of jemalloc's own (by default it keeps it ten
/// seconds, and only gives it back when it is next called), so an idle instance stays near
/// 19 MiB.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config::worker_threads(cli.settings.worker_threads, cores))
        .enable_all()
        .build()
        .expect("the runtime starts")
        .block_on(serve_or_command(cli))
}

async fn serve_or_command(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    if command == Command::Openapi {
        print!("{}", http::spec_yaml());
        return ExitCode::SUCCESS;
    }
    // `keys` prints for people on stdout; its progress would only bury that on a terminal.
    let log_level = match command {
        Command::Keys(_) => "warn",
        _ => "info",
    };
    let _telemetry = telemetry::init(log_level);
    match run(&command, Settings::from(cli.settings)).await {
        Ok(()) => ExitCode::SUCCESS,
        // A mistake in what was asked, as clap reports its own: said plainly, exit status 2.
        Err(StartError::Keys(error @ (KeysError::NameTaken(_) | KeysError::NoSuchKey(_)))) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "{command:?} failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: &Command, settings: Settings) -> Result<(), StartError> {
    let database = match command {
        Command::Keys(_) => Database::open_beside_server(&settings).await?,
        _ => Database::open(&settings).await?,
    };
    let result = run_with(command, &settings, &database).await;
    database.close().await;
    result
}

async fn run_with(
    command: &Command,
    settings: &Settings,
    database: &Database,
) -> Result<(), StartError> {
    let applied = migrations::run(&database.pool).await?;
    tracing::info!(applied, "migrations are up to date");
    if let Command::Keys(keys_command) = command {
        return manage_keys(keys_command, &database.pool).await;
    }
    if *command == Command::Seed {
        let report = storage::seed::load(&database.pool)
            .await
            .map_err(StartError::Seed)?;
        tracing::info!(
            services_added = report.services_added,
            orders_added = report.orders_added,
            "sample data loaded"
        );
    }
    if *command == Command::Serve {
        if let DatabaseSettings::Embedded { data_dir } = &settings.database {
            provide_local_key(&database.pool, data_dir).await?;
        }
        let shutdown = shutdown_signal().map_err(StartError::Signals)?;
        let mut state = AppState::new(database.pool.clone(), database.connector.clone());
        state.idempotency_retention = settings.idempotency_retention;
        state.event_retention = settings.event_retention;
        state.keys = KeyRing::with_default_rate(settings.rate_limit);
        state.max_in_flight = settings.max_in_flight;
        state.answer_bound = settings.session_limits.answer_bound();
        state.share_connections(settings.db_shared_connections);
        let app = Application::build(settings.bind, state)
            .await?
            .serve_settings(settings.serve);
        app.run_until(shutdown).await.map_err(StartError::Serve)?;
    }
    Ok(())
}

/// The private cluster's one-command start: a key to call it with, in a file beside it.
async fn provide_local_key(
    pool: &deadpool_postgres::Pool,
    data_dir: &std::path::Path,
) -> Result<(), StartError> {
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

/// `orders keys ...`: what it prints is for people, on stdout; the new secret alone on the
/// last line, so scripts can take it with `tail -n 1`.
async fn manage_keys(
    command: &KeysCommand,
    pool: &deadpool_postgres::Pool,
) -> Result<(), StartError> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            rate,
            burst,
        } => {
            let rate = rate.map(|per_second| RateLimit::new(per_second, *burst));
            let secret = key_management::create_with_rate(pool, name, scopes, rate).await?;
            let scopes: std::collections::BTreeSet<&str> =
                scopes.iter().map(|scope| scope.as_str()).collect();
            let scopes: Vec<&str> = scopes.into_iter().collect();
            let limited = rate.map_or_else(String::new, |rate| format!(", limited to {rate}"));
            println!(
                "Created the API key {name} with {}{limited}. Its secret, shown only this once:",
                scopes.join(", ")
            );
            println!("{secret}");
        }
        KeysCommand::List => {
            let minute =
                |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%MZ").to_string();
            let never = || "-".to_owned();
            let rows: Vec<[String; 6]> = key_management::list(pool)
                .await?
                .into_iter()
                .map(|key| {
                    let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
                    [
                        key.name,
                        scopes.join(","),
                        minute(key.created_at),
                        key.last_used_at.map_or_else(never, minute),
                        key.revoked_at.map_or_else(never, minute),
                        key.rate.map_or_else(never, |rate| {
                            format!("{}/s,burst={}", rate.per_second, rate.burst)
                        }),
                    ]
                })
                .collect();
            print_table(
                ["NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED", "RATE"],
                &rows,
            );
        }
        KeysCommand::Revoke { name } => match key_management::revoke(pool, name).await? {
            Revoked::Now => {
                println!("Revoked the API key {name}: every instance refuses it within seconds.")
            }
            Revoked::Already => println!("The API key {name} was revoked already."),
        },
    }
    Ok(())
}

/// Prints rows under a header, in columns as wide as their widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
}
