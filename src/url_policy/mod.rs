//! The URL rules the gateway enforces on what browsers send: where a
//! redirect may lead (`return_to`) and how a request path is matched and
//! judged (`path`). A leaf: it imports nothing from the rest of the crate,
//! so configuration validation and request handling share one reading.

pub mod path;
pub mod return_to;
