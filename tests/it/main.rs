//! Integration tests: the real `palaver` binary on loopback ports, real HTTP
//! clients, real storage. One test binary; one module per area.

mod abuse;
mod asyncapi;
mod auth;
mod browser;
mod cli;
mod config;
mod external;
mod fixtures;
mod hostile;
mod http;
mod lifecycle;
mod logs;
mod metrics;
mod openai;
mod openapi;
mod quota;
mod scripts;
mod sessions;
mod support;
mod tracks;
mod ws;
