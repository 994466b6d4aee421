//! Integration tests: the service over HTTP against a real PostgreSQL.
//! One binary (modules per resource) so it links once.

mod auth;
mod cli;
mod concurrency;
mod conditional;
mod connections;
mod errors;
mod faults;
mod health;
mod helpers;
mod idempotency;
mod listing;
mod migrations;
mod openapi;
mod orders;
mod scale;
mod seed;
mod services;
mod three_hour_rule;
mod unambiguous;
