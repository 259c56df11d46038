//! End-to-end tests: the real gateway against a real `redis-server` and a
//! real OpenID provider (panva's oidc-provider, tests/provider), driven over
//! HTTP the way a browser would; the core flow also against a second,
//! independent provider (IdentityPython's pyop, tests/provider2). See
//! `harness` for how the parts are started.

mod harness;

mod audit_trail;
mod bearer;
mod callback_failures;
mod client_auth;
mod derived_tokens;
mod dpop;
mod front_proxies;
mod http2_abuse;
mod jwks_storm;
mod log_hygiene;
mod login_flow;
mod monitoring;
mod policy;
mod private_ca;
mod provider_discovery;
mod provider_hostile;
mod provider_keys;
mod provider_timing;
mod proxying;
mod reload;
mod rollouts;
mod second_provider;
mod server_limits;
mod session_cache;
mod session_cookies;
mod session_lifecycle;
mod static_app;
mod step_up;
mod store_acl;
mod store_cluster;
mod store_cluster_replies;
mod store_conformance;
mod store_consistency;
mod store_costs;
mod store_ended_idle;
mod store_hostile;
mod store_outage;
mod store_replies;
mod store_sentinel;
mod tokens;
mod traces;
mod upstream_hostile;
mod upstream_http2;
mod upstream_pool;
mod websockets;
