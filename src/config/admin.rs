//! `[admin]`: the admin API's own listener and the bearer secret it
//! requires; off unless `listen` is set.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::{Issues, secret_from};
use crate::secret::SecretString;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Listen address of the admin API; unset keeps it off.
    pub listen: Option<String>,
    /// Bearer secret the admin API requires (prefer `token_file`).
    pub token: Option<String>,
    /// A file holding the admin bearer secret.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: SecretString,
}

pub(super) fn validate(raw: &RawAdmin, issues: &mut Issues) -> Option<AdminConfig> {
    let l = raw.listen.as_ref()?;
    let listen = l
        .parse::<SocketAddr>()
        .map_err(|_| {
            issues.add(
                "admin.listen",
                format!("`{l}` is not a socket address; write e.g. \"127.0.0.1:9090\""),
            );
        })
        .ok();
    let token = secret_from(
        issues,
        "admin.token",
        raw.token.as_ref(),
        raw.token_file.as_ref(),
        true,
    );
    if let Some(t) = &token
        && t.expose().len() < 32
    {
        issues.add(
            "admin.token",
            "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
        );
    }
    Some(AdminConfig {
        listen: listen?,
        token: token?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn the_admin_api_needs_a_token_of_at_least_32_characters() {
        let toml = minimal() + "\n[admin]\nlisten = \"127.0.0.1:9090\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["admin.token"]);
        let err = load_str(&(toml + "token = \"short\"\n"), &[]).expect_err("invalid");
        assert!(err.0[0].message.contains("at least 32"), "{err}");
    }
}
