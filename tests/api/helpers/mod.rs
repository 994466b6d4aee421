//! The test harness: a real PostgreSQL with a fresh database per test (`database`), the app on
//! a free port and the requests tests send it (`app`), the checks on what comes back
//! (`assertions`), and a slow network to the database (`slow_network`). Tests import from
//! here, not from the parts.

mod app;
mod assertions;
mod contract;
mod database;
mod slow_network;
mod sockets;
mod waiting;

pub use app::{
    TEST_KEY_NAME, TestApp, at, create_key, every_page, http_client_with_key, order_body,
    order_input, service_input, spawn_app, spawn_app_on_cluster, spawn_app_with,
    spawn_app_without_database, typed_client_with_key,
};
pub use assertions::{assert_problem, etag, expect_problem, header, status_of};
pub use database::{
    PrivateCluster, TestDatabase, connection_string, fresh_database, unmigrated_database,
};
pub use slow_network::SlowReplies;
pub use sockets::{is_closed, time_until_closed};
pub use waiting::{cpu_time_of, cpu_time_of_this_thread, eventually, eventually_some};
