//! Shared application state: built once from the validated configuration,
//! cloned cheaply into every request (an `Arc`). No globals, so tests can run
//! many gateways with different settings in one process.

use std::ops::Deref;
use std::sync::Arc;

use http::HeaderValue;

use crate::config::{Config, StoreKind};
use crate::oidc::Oidc;
use crate::pages::Pages;
use crate::proxy::routes::RouteTable;
use crate::proxy::{HttpClient, build_client};
use crate::session::Sessions;
use crate::session::refresh::SingleFlight;
use crate::session::store::Store;
use crate::session::store::memory::MemoryStore;
use crate::session::store::redis::RedisStore;

pub struct Inner {
    pub config: Config,
    pub sessions: Sessions,
    pub oidc: Oidc,
    pub flights: SingleFlight,
    pub routes: RouteTable,
    pub client: HttpClient,
    /// HTTP/1.1 only: upgrades (WebSockets) do not exist in HTTP/2 here.
    pub upgrade_client: HttpClient,
    pub pages: Pages,
    /// Shared by every worker of the process.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `X-Forwarded-Proto` and `-Host` values, from `server.public_url`.
    pub forwarded_proto: HeaderValue,
    pub forwarded_host: HeaderValue,
    /// `server.public_url`'s origin, which WebSocket handshakes must name.
    pub public_origin: String,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Opens the configured store (connections are made lazily).
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(match &config.store.kind {
        StoreKind::Memory => Store::Memory(MemoryStore::new()),
        StoreKind::Redis(r) => Store::Redis(RedisStore::new(
            r,
            &config.store.key_prefix,
            config.store.timeout,
        )?),
    })
}

impl AppState {
    /// A gateway with its own store connection and metrics.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let store = Arc::new(open_store(&config)?);
        Self::with_parts(config, store, Arc::new(crate::metrics::Metrics::new()))
    }

    /// A gateway (or one worker of one) over a given store and metrics
    /// registry. Connections to the provider and upstreams are its own.
    pub fn with_parts(
        config: Config,
        store: Arc<Store>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
        let sessions = Sessions::new(&config.session, store).with_metrics(&metrics);
        let oidc = Oidc::new(&config.oidc, &config.server.redirect_uri())?;
        let routes = RouteTable::new(&config.routes)?;
        let client = build_client(&config.proxy, true)?;
        let upgrade_client = build_client(&config.proxy, false)?;
        let forwarded_proto = HeaderValue::from_str(config.server.public_url.scheme())?;
        let host = match config.server.public_url.port() {
            Some(p) => format!(
                "{}:{p}",
                config.server.public_url.host_str().unwrap_or_default()
            ),
            None => config
                .server
                .public_url
                .host_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let forwarded_host = HeaderValue::from_str(&host)?;
        Ok(Self(Arc::new(Inner {
            sessions,
            oidc,
            flights: SingleFlight::default(),
            routes,
            client,
            upgrade_client,
            public_origin: config.server.public_origin(),
            pages: Pages::new()?,
            metrics,
            forwarded_proto,
            forwarded_host,
            config,
        })))
    }
}
