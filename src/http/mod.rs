//! The HTTP layer: one module per resource, each exporting
//! `config(cfg: &mut web::ServiceConfig)`; handlers are thin (extract → call
//! a repository or an actor → `Result<_, ApiError>`). Only this module knows
//! actix-web request and response types.

pub mod auth;
pub mod client;
pub mod connection;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod origin;
pub mod path;
pub mod quota;
pub mod server;
pub mod sessions;
pub mod tracks;
pub mod ws;

pub use error::ApiError;
