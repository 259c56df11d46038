//! The second, independent OpenID provider: IdentityPython's pyop behind a
//! small Flask app (tests/provider2/server.py), run by the Python of the
//! virtualenv `scripts/lib.sh`'s `ensure_provider2` makes, over HTTPS with a
//! test CA's certificate (pyop refuses an http issuer).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use super::TestCa;
use super::procs::{Guarded, repo_root, spawn_guarded_to};

/// The virtualenv `ensure_provider2` installs into (same rule as
/// `provider2_venv` in scripts/lib.sh).
fn venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("OIDC_BFF_PROVIDER2_VENV") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    cache.join("oidc-bff").join("provider2-venv")
}

pub struct Provider2Process {
    pub issuer: String,
    _proc: Guarded,
}

impl Provider2Process {
    /// Starts the provider with `ca`'s server certificate, its access tokens
    /// living `access_token_ttl` seconds. Panics (the test fails) when the
    /// virtualenv is missing or stale: a silent skip would hide that the
    /// second provider was never tested.
    pub fn start(ca: &TestCa, access_token_ttl: u32) -> Self {
        let dir = repo_root().join("tests").join("provider2");
        let venv = venv();
        let python = venv.join("bin").join("python");
        let wanted = std::fs::read(dir.join("requirements.txt")).expect("requirements.txt");
        let stamp = std::fs::read(venv.join(".requirements-stamp")).unwrap_or_default();
        assert!(
            python.exists() && stamp == wanted,
            "the second provider's virtualenv {} is missing or out of date: run `scripts/test` \
             (or `. scripts/lib.sh && ensure_provider2`), which installs tests/provider2/requirements.txt",
            venv.display()
        );
        let args = vec![
            dir.join("server.py").to_string_lossy().into_owned(),
            "--tls-cert".to_owned(),
            ca.file("server.pem"),
            "--tls-key".to_owned(),
            ca.file("server.key"),
            "--access-token-ttl".to_owned(),
            access_token_ttl.to_string(),
        ];
        let mut g = spawn_guarded_to(
            &python.to_string_lossy(),
            &args,
            Stdio::piped(),
            Stdio::inherit(),
        );
        let stdout = g.child.stdout.take().expect("provider2 stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("provider2 ready line");
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("provider2 printed {line:?}: {e}"));
        let issuer = v["issuer"].as_str().expect("issuer").to_owned();
        Self { issuer, _proc: g }
    }
}
