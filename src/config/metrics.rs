//! `[metrics]`: where Prometheus metrics are served, if anywhere.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::common::Issues;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Listen address for Prometheus metrics (`GET /metrics`); unset keeps
    /// it off. Unauthenticated: bind it to a private address.
    pub listen: Option<String>,
}

pub(super) fn validate(raw: &RawMetrics, issues: &mut Issues) -> Option<SocketAddr> {
    let l = raw.listen.as_ref()?;
    l.parse::<SocketAddr>()
        .map_err(|_| {
            issues.add(
                "metrics.listen",
                format!("`{l}` is not a socket address; write e.g. \"127.0.0.1:9091\""),
            )
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn metrics_listen_must_be_a_socket_address() {
        let toml = minimal() + "\n[metrics]\nlisten = \"localhost\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["metrics.listen"]);
    }
}
