//! The orders service: an HTTP API through which other systems create, change and read
//! orders and the services they book.
//!
//! The crate is laid out by layer, from the top down, and a module imports only modules below
//! it (`tests/api/layers.rs` holds the code to that):
//!
//! - [`cli`] is the binary's commands; [`startup`] builds a running [`startup::Application`]
//!   from [`config::Settings`], in one place.
//! - [`server`] accepts connections, bounds what each may hold, and drains on shutdown; it
//!   hands requests to [`http`].
//! - [`http`] parses requests into domain values, calls the application and maps the result
//!   (or the error) back to HTTP. It holds no SQL and decides nothing.
//! - [`app`] decides: which error wins, what to look up, what a precondition means. It calls
//!   storage and knows nothing of HTTP.
//! - [`storage`] talks SQL to PostgreSQL through a connection pool. It knows nothing of HTTP.
//! - [`embedded_postgres`] runs a private PostgreSQL cluster when no `DATABASE_URL` is given.
//! - [`domain`] holds the types that can only carry valid values, the rules that make them
//!   so, and the records every layer above speaks of (an order, a service, an event).
//! - [`telemetry`] (logs, metrics, traces) and [`config`] (the settings, as plain data) import
//!   nothing of the service: any layer may record a metric, and only start-up reads settings.

// The request pipeline's type nests fourteen stages (see `http::pipeline`); proving that it is
// an endpoint takes the compiler deeper than its default limit.
#![recursion_limit = "256"]

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod embedded_postgres;
pub mod http;
pub mod server;
pub mod startup;
pub mod storage;
pub mod telemetry;
