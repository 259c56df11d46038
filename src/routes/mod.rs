//! HTTP handlers for the gateway's own endpoints (`/auth/*`, health).
//! Everything else falls through to the proxy (`crate::proxy::handle`).

pub mod auth;
pub mod health;
pub mod static_files;
pub mod user;
