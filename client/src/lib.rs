//! A typed Rust client for the orders service.
//!
//! Generated at build time from the service's committed `openapi.yaml` (see `build.rs`), so it
//! always matches the contract: change the API, regenerate the spec, and this crate follows.
//! It holds no hand-written request code.
//!
//! Each operation is a method of [`Client`] named by its operation id (`order_create`,
//! `order_list`, `service_update`, ...). It returns a builder: set the parameters and the body,
//! then `send()`. A success is a [`ResponseValue`], which derefs to the body ([`types::Order`],
//! [`types::OrderPage`], ...) and keeps the status and headers (`etag`, `location`,
//! `x-request-id`). Every documented error status comes back as [`Error::ErrorResponse`] holding
//! a [`types::Problem`]: branch on its `code`, and quote its `request_id` when reporting it.
//!
//! ```no_run
//! use orders_client::{Client, Error, types};
//!
//! async fn book_an_inspection() -> Result<(), Error<types::Problem>> {
//!     let client = Client::new("http://127.0.0.1:8080");
//!
//!     let booking = client
//!         .order_create()
//!         .body(types::OrderInput {
//!             datetime: "2022-11-01T12:00:00Z".parse().expect("an RFC 3339 date-time"),
//!             totalfee: 100.0,
//!             services: vec![types::ServiceRef { id: "123".to_owned() }],
//!         })
//!         .send()
//!         .await;
//!
//!     match booking {
//!         Ok(order) => println!("booked order {} at {}", order.id, order.datetime),
//!         Err(Error::ErrorResponse(problem)) if problem.code == "ORDER_TIME_CONFLICT" => {
//!             let other = problem.conflicting_order_id.as_deref().unwrap_or("unknown");
//!             println!("less than 3 hours from order {other}: {}", problem.detail);
//!         }
//!         Err(other) => return Err(other),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Things to know:
//!
//! - A `304 Not Modified` (a view with an `If-None-Match` that matches) is not an error the spec
//!   types: it arrives as [`Error::UnexpectedResponse`] with status 304 and the `etag` header.
//! - Date-times are sent and received as `DateTime<Utc>`; the service accepts other offsets,
//!   this client always sends UTC.
//! - The client speaks plain HTTP (reqwest without a TLS backend), as callers inside the
//!   service's network do.

// Descriptions in the spec are prose for people; rustdoc would try to run any code block in
// them as a doc test, so the generated code is left out of doc-test collection.
#[cfg(not(doctest))]
#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

#[cfg(not(doctest))]
pub use generated::*;
