//! Integration tests: the service over HTTP against a real PostgreSQL.
//! One binary (modules per resource) so it links once.

mod auth;
mod binary;
mod compression;
mod concurrency;
mod conditional;
mod connections;
mod errors;
mod event_retention;
mod events;
mod faults;
mod free_slots;
mod fuzz;
mod health;
mod helpers;
mod idempotency;
mod instances;
mod layers;
mod listing;
mod long_polling;
mod metrics;
mod migrations;
mod openapi;
mod orders;
mod overload;
mod scale;
mod seed;
mod services;
mod shared_connections;
mod three_hour_rule;
mod tls;
mod traces;
mod unambiguous;
