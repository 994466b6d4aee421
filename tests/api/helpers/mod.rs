//! The test harness: a real PostgreSQL with a fresh database per test (`database`), the app on
//! a free port and the requests tests send it (`app`), and the checks on what comes back
//! (`assertions`). Tests import from here, not from the parts.

mod app;
mod assertions;
mod database;

pub use app::{
    TestApp, at, every_page, order_body, order_input, service_input, spawn_app,
    spawn_app_without_database,
};
pub use assertions::{assert_problem, etag, expect_problem, header, status_of};
pub use database::{connection_string, unmigrated_database};
