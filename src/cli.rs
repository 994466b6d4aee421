//! The binary's commands: serve (the default), migrate, seed, print the spec, and manage the
//! API keys. `main` parses them and hands them here; see `orders --help`.

use std::{num::NonZeroU32, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    app::key_management::{self, KeysError},
    config::{Settings, SettingsArgs, parse_rate},
    domain::{KeyName, RateLimit, Revoked, Scope},
    http::{self, problem::error_chain},
    startup::{Application, Database, StartError, shutdown_signal},
    storage::{self, migrations},
    telemetry,
};

/// The orders service: an HTTP API for orders and the services they book.
#[derive(Debug, Parser)]
#[command(name = "orders", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Migrate the database and serve the API (the default).
    Serve,
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Load the sample data (idempotent: running it twice changes nothing), then exit.
    Seed,
    /// Print the OpenAPI spec as YAML; `orders openapi > openapi.yaml` regenerates the committed one.
    Openapi,
    /// Manage the API keys that callers authenticate with.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret, alone on the last line; it is never shown again.
    Create {
        /// The key's name, shown in logs and in `created_by`/`updated_by`: 1 to 63 of a-z, 0-9,
        /// '.', '_' and '-', starting with a letter or digit. Names are never reused.
        #[arg(long)]
        name: KeyName,
        /// A scope the key holds: orders:read, orders:write or services:write. Repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// The key's own rate limit, in requests a second on each instance; it replaces the
        /// instance's --rate-limit for this key. Unset: the instance's limit applies, if any.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<NonZeroU32>,
        /// How many requests the key may send at once after a quiet spell (the bucket's size).
        /// Unset: one second's worth, as --rate.
        #[arg(long, value_parser = parse_rate, requires = "rate")]
        burst: Option<NonZeroU32>,
    },
    /// List the keys: name, scopes, created, last used (to the minute), revoked, and the key's
    /// own rate limit (`-`: the instance's applies). Never secrets.
    List,
    /// Revoke a key: every instance refuses it within seconds. It stays listed, and its name taken.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// Runs the command `cli` asks for (serving, by default) and says how it ended.
pub async fn run(cli: Cli) -> ExitCode {
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
    match run_command(&command, Settings::from(cli.settings)).await {
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

async fn run_command(command: &Command, settings: Settings) -> Result<(), StartError> {
    if *command == Command::Serve {
        let shutdown = shutdown_signal().map_err(StartError::Signals)?;
        return Application::build(&settings)
            .await?
            .run_until(shutdown)
            .await;
    }
    let database = match command {
        Command::Keys(_) => Database::open_beside_server(&settings).await?,
        _ => Database::open(&settings).await?,
    };
    let result = run_on(command, &database).await;
    database.close().await;
    result
}

/// The commands that work on the database and exit: `migrate`, `seed` and `keys`.
async fn run_on(command: &Command, database: &Database) -> Result<(), StartError> {
    let applied = migrations::run(&database.pool).await?;
    tracing::info!(applied, "migrations are up to date");
    match command {
        Command::Keys(keys_command) => manage_keys(keys_command, &database.pool).await,
        Command::Seed => {
            let report = storage::seed::load(&database.pool)
                .await
                .map_err(StartError::Seed)?;
            tracing::info!(
                services_added = report.services_added,
                orders_added = report.orders_added,
                "sample data loaded"
            );
            Ok(())
        }
        _ => Ok(()),
    }
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
