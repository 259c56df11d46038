//! The `oidc-bff` binary's command line as an operator meets it:
//! `--version`, and `check-config` on the shipped example config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn oidc_bff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
        .args(args)
        .env_remove("OIDC_BFF_CONFIG")
        .output()
        .expect("run oidc-bff")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn version_names_the_crate_version_and_the_git_revision() {
    let out = oidc_bff(&["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let prefix = format!("oidc-bff {} (", env!("CARGO_PKG_VERSION"));
    let rev = line
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`{line}` is not `oidc-bff <version> (<revision>)`"));
    let hash = rev.strip_suffix("-dirty").unwrap_or(rev);
    assert!(
        hash == "no git revision"
            || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "`{rev}` is neither a short git hash (optionally -dirty) nor the fallback"
    );
}

fn example() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("config/oidc-bff.example.toml")).expect("example config")
}

fn write_temp(text: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("oidc-bff-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("oidc-bff.toml");
    std::fs::write(&file, text).expect("write config");
    (dir, file)
}

#[test]
fn check_config_refuses_the_example_until_its_published_secrets_are_replaced() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example_path = root.join("config/oidc-bff.example.toml");
    let out = oidc_bff(&[
        "check-config",
        "--config",
        example_path.to_str().expect("utf-8 path"),
    ]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(64), "{report}");
    assert!(
        report.contains("oidc.client_secret: is the sample value"),
        "{report}"
    );
    assert!(
        report.contains("session.encryption_keys[0].key: is the sample value"),
        "{report}"
    );
    assert!(report.contains("openssl rand -base64 32"), "{report}");

    let replaced = example()
        .replace("\"change-me\"", "\"a-secret-the-provider-issued\"")
        .replace(
            "bWFrZS15b3VyLW93bi1rZXktd2l0aC1vcGVuc3NsISE=",
            "Tm90LWEtcHVibGlzaGVkLWtleS1mb3ItdGhlLXRlc3Q=",
        );
    let (dir, file) = write_temp(&replaced);
    let out = oidc_bff(&[
        "check-config",
        "--config",
        file.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn check_config_names_a_client_key_that_does_not_fit_its_algorithm() {
    let dir = std::env::temp_dir().join(format!("oidc-bff-cli-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = dir.join("rsa.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl genpkey");
    let config = example()
        .replace("\"change-me\"", "\"a-secret-the-provider-issued\"")
        .replace(
            "bWFrZS15b3VyLW93bi1rZXktd2l0aC1vcGVuc3NsISE=",
            "Tm90LWEtcHVibGlzaGVkLWtleS1mb3ItdGhlLXRlc3Q=",
        )
        .replace(
            "auth_method = \"client_secret_basic\"",
            &format!(
                "auth_method = \"private_key_jwt\"\nclient_key_file = \"{}\"\nclient_key_algorithm = \"ES256\"",
                key.display()
            ),
        );
    let file = dir.join("oidc-bff.toml");
    std::fs::write(&file, config).expect("write config");
    let out = oidc_bff(&[
        "check-config",
        "--config",
        file.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(64), "{report}");
    assert!(
        report.contains("oidc.client_key_file:") && report.contains("holds an RSA key"),
        "{report}"
    );
}

#[test]
fn check_config_names_the_dpop_keys_with_their_fix() {
    let config = example()
        .replace("\"change-me\"", "\"a-secret-the-provider-issued\"")
        .replace(
            "bWFrZS15b3VyLW93bi1rZXktd2l0aC1vcGVuc3NsISE=",
            "Tm90LWEtcHVibGlzaGVkLWtleS1mb3ItdGhlLXRlc3Q=",
        )
        .replace(
            "dpop_signing_alg = \"ES256\"",
            "dpop_signing_alg = \"HS256\"",
        )
        .replace(
            "forward_cookies = false\n",
            "forward_cookies = false\ndpop = true\n",
        );
    let dir = std::env::temp_dir().join(format!("oidc-bff-cli-dpop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("oidc-bff.toml");
    std::fs::write(&file, config).expect("write config");
    let out = oidc_bff(&[
        "check-config",
        "--config",
        file.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(64), "{report}");
    assert!(
        report.contains("oidc.dpop_signing_alg: `HS256` is never accepted")
            && report.contains("use \"ES256\""),
        "{report}"
    );
    assert!(
        report.contains("routes[0].dpop: needs DPoP-bound session tokens: set oidc.dpop = true"),
        "{report}"
    );
}

#[test]
fn healthcheck_says_why_the_gateway_is_not_healthy() {
    // Nothing listens on port 1.
    let out = oidc_bff(&["healthcheck", "--url", "http://127.0.0.1:1/readyz"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http://127.0.0.1:1/readyz is not healthy: cannot connect"),
        "{}",
        text(&out)
    );
}

#[test]
fn every_sessions_option_is_described_in_help() {
    for command in ["list", "revoke", "stats"] {
        let out = oidc_bff(&["sessions", command, "--help"]);
        assert!(out.status.success(), "{}", text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        for line in help.lines().filter(|l| l.trim_start().starts_with("--")) {
            let (_, description) = line.trim_start().split_once("  ").unwrap_or(("", ""));
            assert!(
                !description.trim().is_empty(),
                "`sessions {command} --help`: {line:?} has no description"
            );
        }
    }
}
