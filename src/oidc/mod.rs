//! Everything that speaks OpenID Connect: provider discovery and calls,
//! token and claim validation. No sessions, no HTTP handling: the flows
//! that join the provider and the session store live in `flows`.

pub mod claims;
pub mod client_auth;
mod discovery_overrides;
pub mod dpop;
pub mod jwt;
pub mod provider;
mod rsa_ring;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// When a worker last warned that the provider is unreachable: every
    /// worker retries, but the process says so once per retry round.
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl OidcCaches {
    pub fn new(config: &OidcConfig) -> Self {
        Self {
            metadata: Arc::default(),
            keys: Arc::new(jwt::KeyCache::new(
                config.jwks_min_refresh_interval,
                config.metadata_refresh_interval,
            )),
            last_warning: Arc::default(),
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

    /// Discovery requires the token-exchange grant when a route uses it
    /// (`key` names that route's `token_exchange`).
    pub fn requiring_token_exchange(mut self, key: Option<String>) -> Self {
        self.provider = self.provider.requiring_token_exchange(key);
        self
    }

    /// Times the provider's calls into the gateway's registry.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        let timers = Arc::new(provider::EndpointTimers::new(metrics));
        self.provider = self.provider.with_timers(timers);
        self
    }

    /// The caches, to build another worker's `Oidc` over them.
    pub fn caches(&self) -> OidcCaches {
        self.caches.clone()
    }

    /// Loads metadata and keys; retried in the background until it works.
    pub async fn warm_up(&self) -> Result<(), provider::ProviderError> {
        self.provider.rediscovered().await?;
        self.keys.reloaded(&self.provider).await
    }

    pub fn is_ready(&self) -> bool {
        self.provider.loaded().is_some() && self.keys.is_loaded()
    }

    /// Whether no worker of this process has warned within the last half
    /// `backoff` (the workers retry at about the same times); if so, this
    /// one warns and says so for the others.
    fn first_to_warn(&self, now: Instant, backoff: Duration) -> bool {
        let Ok(mut last) = self.caches.last_warning.lock() else {
            return true;
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < backoff / 2) {
            return false;
        }
        *last = Some(now);
        true
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
                    if self.first_to_warn(Instant::now(), backoff) {
                        tracing::warn!(error = %e, retry_in = ?backoff, "identity provider not reachable yet");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Oidc;

    fn config() -> crate::config::OidcConfig {
        let toml = "[server]\npublic_url = \"https://app.example.com\"\n[oidc]\n\
                    issuer = \"https://id.example.com\"\nclient_id = \"bff\"\n\
                    client_secret = \"unit-test-secret\"\n[session]\nencryption_keys = \
                    [{ id = \"k\", key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }]\n";
        let dir = std::env::temp_dir().join(format!("oidc-bff-warn-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).expect("write");
        let c = crate::config::load(Some(&path), Vec::new()).expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        c.oidc
    }

    #[test]
    fn workers_sharing_caches_warn_once_per_retry_round() {
        let config = config();
        let first = Oidc::new(&config, "https://app.example.com/auth/callback").expect("oidc");
        let second = Oidc::with_caches(
            &config,
            "https://app.example.com/auth/callback",
            first.caches(),
        )
        .expect("oidc");
        let alone = Oidc::new(&config, "https://app.example.com/auth/callback").expect("oidc");
        let t0 = Instant::now();
        let backoff = Duration::from_secs(2);
        assert!(first.first_to_warn(t0, backoff));
        assert!(!second.first_to_warn(t0 + Duration::from_millis(20), backoff));
        assert!(alone.first_to_warn(t0, backoff), "another process's caches");
        assert!(
            second.first_to_warn(t0 + backoff, backoff),
            "the next round"
        );
    }
}
