//! The orders service: an HTTP API through which other systems create, change and read
//! orders and the services they book.
//!
//! The crate is laid out by layer, and each layer only talks to the one below it:
//!
//! - [`http`] parses requests into domain values, calls the application and maps the result
//!   (or the error) back to HTTP. It holds no SQL and decides nothing.
//! - [`app`] decides: which error wins, what to look up, what a precondition means. It calls
//!   storage and knows nothing of HTTP.
//! - [`domain`] holds the types that can only carry valid values, and the rules that make them so.
//! - [`storage`] talks SQL to PostgreSQL through a connection pool. It knows nothing of HTTP.
//! - [`server`] accepts connections, bounds what each may hold, and drains on shutdown; it
//!   hands requests to [`http`].
//! - [`embedded_postgres`] runs a private PostgreSQL cluster when no `DATABASE_URL` is given.
//! - [`config`], [`telemetry`] and [`startup`] turn settings into a running [`startup::Application`].

pub mod app;
pub mod config;
pub mod domain;
pub mod embedded_postgres;
pub mod http;
pub mod server;
pub mod startup;
pub mod storage;
pub mod telemetry;
