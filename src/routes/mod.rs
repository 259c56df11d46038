//! HTTP handlers for the gateway's own endpoints (`/auth/*`, health,
//! metrics, the separate admin API) and the static app (the router's
//! fallback). Configured routes are served by the proxy's handlers.
//! Handlers stay short: sessions come from the extractors (`extract`), the
//! work from the flows (`flows`).

pub mod admin;
pub mod auth;
pub mod backchannel;
pub mod forward_auth;
pub mod frontchannel;
pub mod health;
pub mod jwks;
pub mod logout;
pub mod sessions;
pub mod static_files;
pub mod user;
