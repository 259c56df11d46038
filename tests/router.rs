//! Router tests: the middle tier between inline unit tests and the
//! end-to-end suite (`tests/e2e`). Each test drives the real app
//! in-process — `oidc_bff::build_router` over the in-memory store, one
//! request at a time through `tower::ServiceExt::oneshot` — and asserts the
//! exact status, body and headers of today's behaviour. No provider runs:
//! it is contacted lazily, and the tests that would need it either assert
//! the 503 or live in the end-to-end tier.

#[path = "router/support.rs"]
mod support;

#[path = "router/auth_endpoints.rs"]
mod auth_endpoints;
#[path = "router/csrf.rs"]
mod csrf;
#[path = "router/errors.rs"]
mod errors;
#[path = "router/hostile_headers.rs"]
mod hostile_headers;
#[path = "router/mounted.rs"]
mod mounted;
#[path = "router/operations.rs"]
mod operations;
#[path = "router/policy.rs"]
mod policy;
#[path = "router/proxying.rs"]
mod proxying;
#[path = "router/static_app.rs"]
mod static_app;
#[path = "router/step_up.rs"]
mod step_up;
