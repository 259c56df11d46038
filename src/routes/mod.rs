//! HTTP handlers for the gateway's own endpoints (`/auth/*`, health, and
//! the separate admin API). Everything else falls through to the proxy
//! (`crate::proxy::handle`).

pub mod admin;
pub mod auth;
pub mod backchannel;
pub mod health;
pub mod sessions;
pub mod static_files;
pub mod user;
