//! The URL rules the gateway enforces on what browsers send: where a
//! redirect may lead (`return_to`), how a request path is matched and
//! judged (`path`), and what a `Host` header may be (`host`). A leaf: it imports nothing from the rest of the crate,
//! so configuration validation and request handling share one reading.

pub mod host;
pub mod path;
pub mod return_to;
