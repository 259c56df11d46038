//! Everything that speaks OpenID Connect: provider discovery and calls,
//! token and claim validation. No sessions, no HTTP handling: the flows
//! that join the provider and the session store live in `flows`.

pub mod claims;
pub mod jwt;
pub mod provider;

use std::sync::Arc;
use std::time::Duration;

use crate::config::OidcConfig;

/// The provider and its signing keys.
pub struct Oidc {
    pub provider: provider::Provider,
    pub keys: Arc<jwt::KeyCache>,
    caches: OidcCaches,
}

/// What every worker of one process shares: the provider's metadata and
/// keys, so they are fetched (and a key rotation is noticed, and the
/// unknown-`kid` rate limit counted) once per process, not once per worker.
#[derive(Clone)]
pub struct OidcCaches {
    metadata: Arc<provider::MetadataCache>,
    keys: Arc<jwt::KeyCache>,
}

impl OidcCaches {
    pub fn new(config: &OidcConfig) -> Self {
        Self {
            metadata: Arc::default(),
            keys: Arc::new(jwt::KeyCache::new(
                config.jwks_min_refresh_interval,
                config.metadata_refresh_interval,
            )),
        }
    }
}

impl Oidc {
    /// A provider client with caches of its own.
    pub fn new(config: &OidcConfig, redirect_uri: &str) -> anyhow::Result<Self> {
        Self::with_caches(config, redirect_uri, OidcCaches::new(config))
    }

    /// A provider client (its own HTTP connections) over shared caches.
    pub fn with_caches(
        config: &OidcConfig,
        redirect_uri: &str,
        caches: OidcCaches,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            provider: provider::Provider::new(config, redirect_uri, caches.metadata.clone())?,
            keys: caches.keys.clone(),
            caches,
        })
    }

    /// The caches, to build another worker's `Oidc` over them.
    pub fn caches(&self) -> OidcCaches {
        self.caches.clone()
    }

    /// Loads metadata and keys; retried in the background until it works.
    pub async fn warm_up(&self) -> Result<(), provider::ProviderError> {
        self.provider.discovered().await?;
        self.keys.ensure_loaded(&self.provider).await
    }

    pub fn is_ready(&self) -> bool {
        self.provider.loaded().is_some() && self.keys.is_loaded()
    }

    /// Keeps metadata and keys loaded: fast retries while the provider is
    /// unreachable, then a re-read every refresh interval.
    pub async fn keep_warm(&self) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.warm_up().await {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    tokio::time::sleep(
                        self.provider
                            .config()
                            .metadata_refresh_interval
                            .min(Duration::from_secs(300)),
                    )
                    .await;
                }
                Err(provider::ProviderError::Misconfigured(_)) => {
                    // Already logged as an error by discovery.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "identity provider not reachable yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
