//! palaver: a single-binary, self-hosted realtime chat server.
//!
//! # Layout
//! - [`config`]: the layered configuration (defaults < file < env < flags).
//! - [`app`]: builds the actix-web `App`, starts the actors, and [`app::run`]s
//!   the server on an already-bound listener until shutdown.
//! - [`http`]: one module per HTTP resource, the error mapping, middleware.
//! - [`cli`]: the operator commands (`user`, `config`).
//! - [`metrics`]: the Prometheus exposition (`/metrics`).
//! - [`logging`]: tracing subscriber setup (pretty or JSON).
//!
//! The actors live in the `palaver-actors` crate, storage in `palaver-storage`.

pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
