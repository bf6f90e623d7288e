//! Latchkey's server: the ZITADEL v2 user service over REST, Connect (JSON and binary), gRPC and
//! gRPC-web, all on one port, on top of [`latchkey_engine`]. Thin by design — routing, auth
//! extraction, wire decoding and error mapping; no business rule lives here.
//!
//! Code map: `server.rs` (router, health, shutdown) → `edge.rs` (gRPC by content type,
//! keep-alive safety; `hot_routes.rs` the hot REST rows before the router) → `rest.rs` /
//! `connect.rs` / `grpc.rs` (the transports) → `rpc/mod.rs` (the table of every RPC; decoding)
//! → `rpc/*.rs` (one file per command: generated message in, engine call, generated message
//! out) → the engine. `proto.rs` holds the generated types,
//! `wire.rs` what messages share (timestamps, details, JSON answers), `error.rs` the mapping of
//! error codes to HTTP, gRPC and Connect, `config.rs` the command line and `config_file.rs` its
//! TOML file, `run.rs` start-up (open, bootstrap, listen — `tls.rs` for HTTPS), `metrics.rs` the
//! Prometheus exporter and per-route metrics, `openapi.rs` the generated `/openapi.json`,
//! `backup.rs` the online backup route. The commands beside `serve`: `operate.rs` (backup,
//! restore, verify, config check, healthcheck) and `admin_cli.rs` (users, orgs); `allocator.rs`
//! the global allocator both binaries install.

pub mod admin_cli;
pub mod allocator;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod connect;
pub mod edge;
pub mod error;
pub mod grpc;
pub mod hot_routes;
pub mod metrics;
pub mod migrate;
pub mod openapi;
pub mod operate;
pub mod proto;
pub mod rest;
pub mod rpc;
pub mod run;
pub mod server;
pub mod tls;
pub mod unread_body;
pub mod wire;

pub use server::{router, serve, shutdown_signal};

/// The version `--version` shows: the crate's, and the commit it was built from when known.
pub const VERSION: &str = env!("LATCHKEY_VERSION");
