//! The token-attaching reverse proxy: the hot path.
//!
//! For a request under a configured route (the router matched it): refuse
//! dot-segment paths and cross-origin WebSocket handshakes (`handler::guard`),
//! check the anti-CSRF header on state-changing methods (a layer), resolve
//! the session (the session extractor: one store read), refresh the access
//! token if it is about to expire, then forward with the route's token
//! (`token`: the user's, the gateway's client token, or none) over a pooled
//! connection (`forward`); a token the upstream refuses (`invalid_token`)
//! is renewed and a request the gateway still holds (bodyless, or a body of
//! at most 64 KiB with a known length) is sent once more. Other bodies
//! stream in both directions, never buffered whole. A route that requires a session
//! never forwards without one: 401 JSON, never a redirect. WebSocket
//! handshakes take the same path; `upgrade` owns what happens after the
//! upstream switches protocols.

pub mod client;
pub mod dpop;
pub mod forward;
pub mod handler;
pub mod headers;
pub mod routes;
pub mod sticky;
pub mod streamed;
pub mod token;
pub mod upgrade;
