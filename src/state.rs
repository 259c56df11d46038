//! Shared application state: built once from the validated configuration,
//! cloned cheaply into every request (an `Arc`). No globals, so tests can run
//! many gateways with different settings in one process.
//!
//! Handlers and the router see [`AppState`]; everything else takes the one
//! piece it needs, through `FromRef` sub-states (extractors, middleware,
//! the proxy's handlers) or as an argument (flows, the session layer).

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;

use crate::audit::Auditor;
use crate::config::Config;
use crate::extract::client::ClientAddressPolicy;
use crate::flows::client_token::ClientTokens;
use crate::flows::logout::LogoutFlow;
use crate::flows::refresh::Refresher;
use crate::identity::Signer;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::middleware::csrf::CsrfRule;
use crate::oidc::{Oidc, OidcCaches};
use crate::pages::Pages;
use crate::proxy::forward::Forwarder;
use crate::proxy::routes::RouteTable;
use crate::session::Sessions;
use crate::session::cache::ProcessCache;
use crate::session::store::{self, Store};

pub struct Inner {
    pub config: Config,
    pub sessions: Arc<Sessions>,
    pub oidc: Arc<Oidc>,
    pub refresher: Arc<Refresher>,
    pub logout: Arc<LogoutFlow>,
    pub routes: RouteTable,
    pub forwarder: Arc<Forwarder>,
    /// Signs identity assertions, when `[assertion]` has keys.
    pub signer: Option<Arc<Signer>>,
    /// `/.well-known/jwks.json`: the assertion keys and the
    /// `private_key_jwt` client key, when there are any.
    pub jwks: Option<String>,
    pub pages: Arc<Pages>,
    /// Shared by every worker of the process.
    pub metrics: Arc<Metrics>,
    pub csrf: Arc<CsrfRule>,
    pub client_address: ClientAddressPolicy,
    /// The process's drain and shutdown stages (`/readyz`, tunnels) and its
    /// reload requests (admin API); the same across reloads.
    pub lifecycle: Lifecycle,
    /// The audit trail's writer, shared by every worker of the process
    /// (and kept across reloads: `[audit]` needs a restart).
    pub audit: Auditor,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// A gateway with its own store connection and metrics.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let store = Arc::new(store::open(&config)?);
        Self::with_parts(config, store, Arc::new(Metrics::new()))
    }

    /// A gateway over a given store and metrics registry, with provider
    /// caches of its own.
    pub fn with_parts(
        config: Config,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let caches = OidcCaches::new(&config.oidc);
        let audit = open_audit(&config, &metrics)?;
        let cache = ProcessCache::open(&config, &metrics.session_cache)?;
        Self::for_worker(
            config,
            store,
            metrics,
            caches,
            audit,
            Lifecycle::default(),
            cache,
        )
    }

    /// One worker of a gateway: store, metrics and the provider's metadata
    /// and key caches are the process's; connections to the provider and
    /// upstreams are the worker's own (they are driven by its runtime).
    pub fn with_shared(
        config: Config,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        oidc_caches: OidcCaches,
        audit: Auditor,
    ) -> anyhow::Result<Self> {
        Self::for_worker(
            config,
            store,
            metrics,
            oidc_caches,
            audit,
            Lifecycle::default(),
            None,
        )
    }

    /// [`Self::with_shared`] in a process that drains and reloads: each
    /// worker builds one at start-up and one per reload, all with the
    /// process's `lifecycle` and session cache.
    pub fn for_worker(
        config: Config,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        oidc_caches: OidcCaches,
        audit: Auditor,
        lifecycle: Lifecycle,
        cache: Option<Arc<ProcessCache>>,
    ) -> anyhow::Result<Self> {
        let sessions = Arc::new(
            Sessions::new(&config.session, store)
                .with_record_layout(config.store.record_layout)
                .with_metrics(&metrics)
                .with_cache(cache),
        );
        let oidc = Arc::new(
            Oidc::with_caches(&config.oidc, &config.server.redirect_uri(), oidc_caches)?
                .requiring_token_exchange(
                    config
                        .routes
                        .iter()
                        .position(|r| r.token.exchange)
                        .map(|i| format!("routes[{i}].token_exchange")),
                )
                .with_metrics(&metrics),
        );
        let refresher = Arc::new(Refresher::new(
            sessions.clone(),
            oidc.clone(),
            config.session.refresh_skew,
            metrics.refreshes.clone(),
            audit.clone(),
        ));
        let logout = Arc::new(LogoutFlow::new(
            sessions.clone(),
            oidc.clone(),
            config.oidc.end_session,
            config.oidc.post_logout_redirect.clone(),
            &config.server.public_url,
            &config.server.base_path,
        ));
        let signer = config
            .assertion
            .as_ref()
            .map(|a| Signer::new(a, config.server.public_url.as_str()).map(Arc::new))
            .transpose()?;
        let forwarder = Arc::new(
            Forwarder::new(
                &config,
                sessions.clone(),
                metrics.clone(),
                Arc::new(ClientTokens::new(oidc.clone(), config.session.refresh_skew)),
                refresher.clone(),
            )?
            .with_signer(signer.clone())
            .with_lifecycle(lifecycle.clone()),
        );
        Ok(Self(Arc::new(Inner {
            routes: RouteTable::new(&config.routes)?
                .with_login_path(&config.server.path("/auth/login"))
                .with_metrics(&metrics),
            csrf: Arc::new(CsrfRule {
                header: config.csrf.header.clone(),
                value: config.csrf.value.clone(),
                audit: audit.clone(),
                sessions: sessions.clone(),
            }),
            client_address: ClientAddressPolicy::new(&config.server.trusted_proxies),
            pages: Arc::new(Pages::new()?.with_base_path(&config.server.base_path)),
            sessions,
            oidc,
            refresher,
            logout,
            forwarder,
            jwks: crate::oidc::client_auth::published_jwks(
                signer.as_deref().map(Signer::jwks_json),
                config.oidc.client_key.as_ref(),
            ),
            signer,
            metrics,
            lifecycle,
            audit,
            config,
        })))
    }
}

/// The audit trail's writer for `config` (one per process: the workers
/// share it), counting its drops in `metrics`.
pub fn open_audit(config: &Config, metrics: &Metrics) -> anyhow::Result<Auditor> {
    let policy = ClientAddressPolicy::new(&config.server.trusted_proxies);
    Auditor::open(
        &config.audit,
        Arc::new(move |headers, peer| crate::extract::client::client_ip(headers, peer, &policy)),
        metrics.audit_dropped.clone(),
    )
}

/// Sub-states: each is one field of the state, handed to whoever needs
/// only that.
macro_rules! sub_state {
    ($($ty:ty => $field:ident),* $(,)?) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        }
    )*};
}

sub_state! {
    Arc<Sessions> => sessions,
    Arc<Oidc> => oidc,
    Arc<Refresher> => refresher,
    Arc<LogoutFlow> => logout,
    Arc<Forwarder> => forwarder,
    Arc<Pages> => pages,
    Arc<Metrics> => metrics,
    Arc<CsrfRule> => csrf,
    ClientAddressPolicy => client_address,
    Auditor => audit,
}
