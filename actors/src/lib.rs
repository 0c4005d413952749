//! palaver-actors: the actors that run palaver, and the domain logic they own.
//!
//! # Layout
//! - [`supervisor`]: started at boot; owns the lifecycle of the other actors
//!   and drives graceful shutdown.
//! - [`messages`]: every message type, with its sender, receiver and reply.
//! - [`password`]: argon2id hashing and verification (CPU-heavy: call it on a
//!   blocking thread).
//!
//! Actors never touch sled: they go through `palaver-storage` repositories.

pub mod messages;
pub mod password;
pub mod supervisor;

pub use supervisor::Supervisor;
