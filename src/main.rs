//! `orders`: serve the API, migrate, seed, or print the spec. See `orders --help`.

use std::process::ExitCode;

use clap::Parser;
use orders::{
    config::{Cli, Command, Settings},
    http::{self, problem::error_chain},
    startup::{Application, Database, StartError, shutdown_signal},
    storage::{self, migrations},
    telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if command == Command::Openapi {
        print!("{}", http::spec_yaml());
        return ExitCode::SUCCESS;
    }
    telemetry::init();
    match run(command, Settings::from(cli.settings)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "{command:?} failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> Result<(), StartError> {
    let database = Database::open(&settings).await?;
    let result = run_with(command, &settings, &database).await;
    database.close().await;
    result
}

async fn run_with(
    command: Command,
    settings: &Settings,
    database: &Database,
) -> Result<(), StartError> {
    let applied = migrations::run(&database.pool).await?;
    tracing::info!(applied, "migrations are up to date");
    if command == Command::Seed {
        let report = storage::seed::load(&database.pool)
            .await
            .map_err(StartError::Seed)?;
        tracing::info!(
            services_added = report.services_added,
            orders_added = report.orders_added,
            "sample data loaded"
        );
    }
    if command == Command::Serve {
        let shutdown = shutdown_signal().map_err(StartError::Signals)?;
        let app = Application::build(settings.bind, database.pool.clone()).await?;
        app.run_until(shutdown).await.map_err(StartError::Serve)?;
    }
    Ok(())
}
