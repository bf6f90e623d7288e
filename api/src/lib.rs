//! Latchkey's server: the ZITADEL v2 user service over REST and Connect JSON, on top of
//! [`latchkey_engine`]. Thin by design — routing, auth extraction, JSON mapping and error
//! mapping; no business rule lives here.
//!
//! Code map: `server.rs` (router, health, shutdown) → `edge.rs` (gRPC by content type,
//! keep-alive safety) → `rest.rs` / `connect.rs` (transports) →
//! `rpc/*.rs` (one file per command: request/response JSON and the engine call) → the engine.
//! `wire.rs` holds the protojson conventions, `error.rs` the mapping of error codes to HTTP,
//! `config.rs` the command line, `run.rs` start-up (open, bootstrap, listen), `metrics.rs`
//! the Prometheus exporter and per-route metrics.

pub mod config;
pub mod connect;
pub mod edge;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod proto;
pub mod rest;
pub mod rpc;
pub mod run;
pub mod server;
pub mod unread_body;
pub mod wire;

pub use server::{router, serve, shutdown_signal};
