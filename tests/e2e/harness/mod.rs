//! The test harness: real Redis, real OpenID provider, the real gateway on a
//! random port, and a scripted browser that follows the provider's login
//! form. Each test gets its own key prefix in the shared Redis, so tests run
//! in parallel without seeing each other's sessions.
//!
//! This module owns only the processes every test shares and the constants
//! they are configured with; each part lives in its own file (`gateway`,
//! `browser`, `provider_api`, `provider2`, `raw_http`, `net`, `otlp`, `procs`, `test_ca`, `tls_upstream`) and is re-exported
//! here, so tests import everything from `harness::`.

pub mod browser;
pub mod front_proxy;
pub mod gateway;
pub mod h2_raw;
pub mod net;
pub mod otlp;
pub mod procs;
pub mod provider2;
pub mod provider_api;
pub mod raw_http;
pub mod resp;
pub mod sharded;
pub mod test_ca;
pub mod tls_upstream;

use std::sync::OnceLock;

pub use browser::{Browser, LoginSecrets, form_action, hidden_inputs, urlencode};
pub use gateway::{Gateway, GatewayBuilder, duration, route};
pub use net::{Chaos, Upstream};
pub use otlp::OtlpReceiver;
pub use procs::{ProviderProcess, RedisCluster, RedisServer, SentinelProcess, TlsStatusServer};
pub use provider_api::ProviderApi;
pub use provider2::Provider2Process;
pub use raw_http::{Answer, BrowserConnection, Cut, public};
pub use resp::{Act, RespProxy};
pub use test_ca::TestCa;
pub use tls_upstream::TlsUpstream;

pub const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const CLIENT_ID: &str = "oidc-bff";
pub const CLIENT_SECRET: &str = "oidc-bff-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";

/// Processes shared by every test in this binary.
pub struct Shared {
    pub redis: RedisServer,
    pub provider: ProviderProcess,
}

pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        oidc_bff::telemetry::init(
            &oidc_bff::config::LogConfig {
                format: oidc_bff::config::LogFormat::Text,
                // The gateways' logs are what the tests provoke (refused
                // logins, cut connections, unreachable providers: dozens of
                // warnings and errors per run) and would bury a failure's
                // own message; RUST_LOG=warn (or error) shows them.
                level: "off".into(),
                access_log: false,
            },
            std::env::var("RUST_LOG").ok().as_deref(),
            oidc_bff::telemetry::no_color(std::env::var("NO_COLOR").ok().as_deref()),
        );
        Shared {
            redis: RedisServer::start(),
            provider: ProviderProcess::start(&[]),
        }
    })
}

/// A gateway process's log file once it holds `needle`, or as it is after
/// 10 s: a worker writes its lines in batches, when it runs out of work
/// (`log_output`), which can be just after the response went out.
pub async fn log_once_it_has(path: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The `Cookie` request header a browser sends back for a `Set-Cookie`
/// value (its `name=value` pair), for tests that call `Sessions` directly.
pub fn cookie_request(set_cookie: &http::HeaderValue) -> http::HeaderMap {
    let pair = set_cookie
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, pair.parse().expect("header"));
    h
}

/// A user name no other test uses.
pub fn unique_user(label: &str) -> String {
    format!("{label}-{:08x}", rand::random::<u32>())
}

pub fn random_prefix() -> String {
    format!("t{:016x}:", rand::random::<u64>())
}
