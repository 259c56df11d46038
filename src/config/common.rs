//! Helpers every section's validation shares: durations, the issue
//! collector, secrets inline or from `*_file`, PEM files and client
//! certificates, URL host checks and server-key decoding.
//!
//! Nothing here knows a section's rules; a helper takes the key it reports
//! under, so every message names the key the operator has to fix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{ConfigIssue, ENV_PREFIX};
use crate::secret::SecretString;

/// A duration: a number of seconds or a humantime string such as `"90s"`,
/// `"15m"`, `"12h"`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"15m\", \"12h\" or a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(RawDuration::Seconds)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl RawDuration {
    pub(super) fn text(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

/// Why `text` is not a URL, in words an operator can act on: the `url`
/// crate's "relative URL without a base" means the scheme is missing.
pub(super) fn not_a_url(text: &str, error: url::ParseError, example: &str) -> String {
    let why = match error {
        url::ParseError::RelativeUrlWithoutBase => {
            "is not an absolute URL (no scheme such as https://)".to_owned()
        }
        url::ParseError::EmptyHost => "is not a URL: the host is missing".to_owned(),
        other => format!("is not a URL ({other})"),
    };
    format!("`{text}` {why}; expected a URL such as \"{example}\"")
}

/// `text` as a configuration message may quote it: a URL's user info
/// (`user:password@`) replaced by `***@`, so a refused value never puts
/// a credential in `check-config`'s output or the start-up log.
pub(super) fn shown_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
        return text.to_owned();
    };
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..scheme_end], &rest[at..]),
        None => text.to_owned(),
    }
}

/// The first part a URL of the configuration must not have, named for a
/// message: user info (credentials do not belong in a URL that is logged
/// and compared), a fragment (never sent, so never meant), and a query
/// unless `query_ok`.
pub(super) fn url_extra(u: &Url, query_ok: bool) -> Option<&'static str> {
    if !u.username().is_empty() || u.password().is_some() {
        Some("user info")
    } else if u.fragment().is_some() {
        Some("a fragment")
    } else if !query_ok && u.query().is_some() {
        Some("a query")
    } else {
        None
    }
}

/// Edit distance between two short names (Levenshtein, by characters), for
/// "did you mean" suggestions; a table of a few dozen keys needs nothing
/// faster, so no crate is added for it.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `unknown`, if it is close enough to be a typo
/// (at most a third of its length, and at least one edit, away).
pub(super) fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (unknown.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(unknown, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Collects every problem so that one `check-config` run lists them all.
#[derive(Default)]
pub(super) struct Issues(pub(super) Vec<ConfigIssue>);

impl Issues {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// The longest duration any setting takes: 400 days, the longest a
/// browser keeps a cookie (RFC 6265bis §5.6), so no session, login or
/// timeout of the gateway can use more. Bounding every duration here keeps
/// the arithmetic on them (deadlines in seconds and milliseconds, cookie
/// lifetimes, `Instant` additions) far from overflow whatever the file says.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(400 * 86400);

/// A duration as written, or why it is not one (reported under `key`).
fn parsed_duration(raw: &RawDuration) -> Result<Duration, String> {
    let (d, t) = match raw {
        RawDuration::Seconds(s) => (Duration::from_secs(*s), format!("{s}")),
        RawDuration::Text(t) => match humantime::parse_duration(t.trim()) {
            Ok(d) => (d, t.clone()),
            Err(e) => {
                return Err(format!(
                    "`{t}` is not a duration ({e}); write e.g. \"30s\", \"15m\" or \"12h\""
                ));
            }
        },
    };
    if d > MAX_DURATION {
        return Err(format!(
            "`{t}` is longer than 400 days, the most any setting takes (a browser keeps no cookie longer); write e.g. \"12h\" or \"30d\""
        ));
    }
    Ok(d)
}

pub(super) fn duration(issues: &mut Issues, key: &str, raw: &RawDuration) -> Duration {
    parsed_duration(raw).unwrap_or_else(|why| {
        issues.add(key, why);
        Duration::ZERO
    })
}

/// A duration that must not be zero; one that is not a duration at all (or
/// too long) is reported once, for that.
pub(super) fn positive_duration(issues: &mut Issues, key: &str, raw: &RawDuration) -> Duration {
    match parsed_duration(raw) {
        Ok(d) if d.is_zero() => {
            issues.add(key, "must be greater than zero");
            d
        }
        Ok(d) => d,
        Err(why) => {
            issues.add(key, why);
            Duration::ZERO
        }
    }
}

/// The most a file named in the configuration may hold (a secret, a PEM
/// key or certificate bundle: all far smaller). A wrong path — `/dev/zero`,
/// a log file — is refused instead of read until memory runs out.
const FILE_LIMIT: u64 = 1024 * 1024;

/// A file named in the configuration, read whole within [`FILE_LIMIT`];
/// the error is the message to report under its key.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(format!(
            "{} holds more than 1 MiB; name a file that holds just the value",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Exactly one of an inline value and a file; a file's trailing newline is
/// dropped. A missing required secret names all three ways to set it.
pub(super) fn secret_from(
    issues: &mut Issues,
    key: &str,
    inline: Option<&String>,
    file: Option<&PathBuf>,
    required: bool,
) -> Option<SecretString> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            issues.add(key, format!("set either `{key}` or `{key}_file`, not both"));
            None
        }
        (Some(v), None) => {
            if v.is_empty() {
                issues.add(key, "must not be empty");
                None
            } else {
                Some(SecretString::new(v.clone()))
            }
        }
        (None, Some(path)) => match read_file(path).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
        }) {
            Ok(content) => {
                let trimmed = content.trim_end_matches(['\n', '\r']).to_owned();
                if trimmed.is_empty() {
                    issues.add(
                        format!("{key}_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                } else {
                    Some(SecretString::new(trimmed))
                }
            }
            Err(why) => {
                issues.add(format!("{key}_file"), why);
                None
            }
        },
        (None, None) => {
            if required {
                let env = format!(
                    "{ENV_PREFIX}{}",
                    key.to_ascii_uppercase().replace('.', "__")
                );
                issues.add(
                    key,
                    format!(
                        "missing; set `{key}`, `{key}_file`, or the environment variable {env}"
                    ),
                );
            }
            None
        }
    }
}

/// What a PEM file given in the configuration must hold.
#[derive(Clone, Copy)]
pub(super) enum Pem {
    /// One or more certificates (a CA bundle, a client certificate).
    Certificates,
    /// One unencrypted private key.
    PrivateKey,
}

/// Reads a PEM file and checks that it parses as `want`, so a damaged file
/// is reported by `check-config` under its key rather than at first use.
pub(super) fn read_pem(issues: &mut Issues, key: &str, path: &Path, want: Pem) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = match read_file(path) {
        Ok(pem) => pem,
        Err(why) => {
            issues.add(key, why);
            return None;
        }
    };
    let problem = match want {
        Pem::Certificates => {
            match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if certs.is_empty() => {
                    Some(format!("{} holds no PEM certificate", path.display()))
                }
                Ok(_) => None,
                Err(e) => Some(format!(
                    "{}: not a valid PEM certificate: {e}",
                    path.display()
                )),
            }
        }
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(&pem).err().map(|e| {
            format!(
                "{} holds no PEM PRIVATE KEY (unencrypted PKCS#8, PKCS#1 or SEC1): {e}",
                path.display()
            )
        }),
    };
    match problem {
        Some(message) => {
            issues.add(key, message);
            None
        }
        None => Some(pem),
    }
}

/// A TLS client certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub cert_pem: Vec<u8>,
    pub key_pem: SecretString,
}

/// `<section>.tls_cert_file` and `<section>.tls_key_file`: both or neither.
pub(super) fn certificate_files<'a>(
    issues: &mut Issues,
    section: &str,
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> Option<(&'a Path, &'a Path)> {
    match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c, k)),
        (Some(_), None) => {
            issues.add(
                format!("{section}.tls_key_file"),
                format!("missing; {section}.tls_cert_file needs the file with its private key"),
            );
            None
        }
        (None, Some(_)) => {
            issues.add(
                format!("{section}.tls_cert_file"),
                format!("missing; {section}.tls_key_file needs the file with its certificate"),
            );
            None
        }
    }
}

/// Reads and checks a client certificate and its key (mutual TLS).
pub(super) fn read_client_certificate(
    issues: &mut Issues,
    section: &str,
    cert: &Path,
    key: &Path,
) -> Option<ClientCertificate> {
    let key_name = format!("{section}.tls_key_file");
    let cert_pem = read_pem(
        issues,
        &format!("{section}.tls_cert_file"),
        cert,
        Pem::Certificates,
    );
    let key_pem = read_pem(issues, &key_name, key, Pem::PrivateKey).and_then(|pem| {
        match String::from_utf8(pem) {
            Ok(text) => Some(SecretString::new(text)),
            Err(_) => {
                issues.add(key_name.clone(), "is not a text PEM file");
                None
            }
        }
    });
    Some(ClientCertificate {
        cert_pem: cert_pem?,
        key_pem: key_pem?,
    })
}

/// A client certificate outside the store (`oidc`, `proxy`); the store
/// first checks that its connection uses TLS at all.
pub(super) fn client_certificate(
    issues: &mut Issues,
    section: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Option<ClientCertificate> {
    let (cert, key) = certificate_files(issues, section, cert, key)?;
    read_client_certificate(issues, section, cert, key)
}

/// Loopback hosts are where plain http is tolerated: browsers keep Secure
/// cookies on them, and nothing crosses a network.
pub(super) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A server key is 32 bytes in standard or URL-safe base64.
pub(super) fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or_else(|| "is not base64; generate one with `openssl rand -base64 32`".to_owned())?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        format!("must be 32 bytes base64, got {len}; generate one with `openssl rand -base64 32`")
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load_str, minimal};

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("oidc-bff-sec-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("secret");
        std::fs::write(&f, "from-file\n").expect("write");
        let toml = minimal().replace(
            "client_secret = \"unit-test-secret\"",
            &format!("client_secret_file = \"{}\"", f.display()),
        );
        let c = load_str(&toml, &[]).expect("valid");
        assert_eq!(c.oidc.client_secret.expose(), "from-file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_named_file_larger_than_a_mebibyte_or_endless_is_refused_not_read_whole() {
        let dir = std::env::temp_dir().join(format!("oidc-bff-big-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; 1024 * 1024 + 1]).expect("write");
        for (key, path) in [
            ("oidc.client_secret_file", big.display().to_string()),
            ("oidc.client_secret_file", "/dev/zero".to_owned()),
        ] {
            let toml = minimal().replace(
                "client_secret = \"unit-test-secret\"",
                &format!("client_secret_file = \"{path}\""),
            );
            let err = load_str(&toml, &[]).expect_err("refused");
            assert_eq!(err.0.len(), 1, "{err}");
            assert_eq!(err.0[0].key, key, "{err}");
            assert!(err.0[0].message.contains("more than 1 MiB"), "{err}");
        }
        let toml = minimal().replace("[oidc]\n", "[oidc]\ntls_ca_file = \"/dev/zero\"\n");
        let err = load_str(&toml, &[]).expect_err("refused");
        assert!(err.0[0].message.contains("more than 1 MiB"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_certificates_for_the_provider_and_upstreams_come_with_their_keys() {
        let toml = minimal().replace("[oidc]\n", "[oidc]\ntls_key_file = \"/etc/hosts\"\n")
            + "\n[proxy]\ntls_cert_file = \"/etc/hosts\"\ntls_key_file = \"/etc/hosts\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "proxy.tls_cert_file",
                "proxy.tls_key_file",
                "oidc.tls_cert_file"
            ],
            "{err}"
        );
        assert!(err.0[1].message.contains("PRIVATE KEY"), "{err}");
        assert!(
            err.0[2]
                .message
                .contains("oidc.tls_key_file needs the file with its certificate"),
            "{err}"
        );
    }

    #[test]
    fn private_ca_files_for_the_provider_and_upstreams_must_hold_certificates() {
        let toml = minimal().replace("[oidc]\n", "[oidc]\ntls_ca_file = \"/etc/hosts\"\n")
            + "\n[proxy]\ntls_ca_file = \"/nonexistent/ca.pem\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["proxy.tls_ca_file", "oidc.tls_ca_file"], "{err}");
        assert!(err.0[0].message.contains("cannot read"), "{err}");
        assert!(err.0[1].message.contains("no PEM"), "{err}");

        // A file that looks like PEM but does not decode is caught here too.
        let dir = std::env::temp_dir().join(format!("oidc-bff-pem-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("ca.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let toml = minimal() + &format!("\n[proxy]\ntls_ca_file = \"{}\"\n", bad.display());
        let err = load_str(&toml, &[]).expect_err("invalid");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(err.0[0].key, "proxy.tls_ca_file", "{err}");
        assert!(
            err.0[0].message.contains("not a valid PEM certificate"),
            "{err}"
        );
    }
}
