//! Request extractors: what a handler needs to know about who is asking,
//! resolved once per request in one place.
//!
//! - [`client::ClientInfo`]: the client's address (through trusted proxies)
//!   and user agent;
//! - [`session::CurrentSession`] / [`session::MaybeSession`]: the session
//!   the cookie names, with activity recorded when due; the rejection is a
//!   401 (JSON for API calls, a page for navigations via `middleware`),
//!   clearing the cookie when the session has ended;
//! - [`params::Query`] / [`params::Path`]: parameters whose refusal is the
//!   gateway's own 400, never axum's plain-text rejection.
//!
//! Extractors take their sub-states by `FromRef`, so they work on any state
//! that provides them and know nothing of `AppState`.

pub mod client;
pub mod params;
pub mod session;
