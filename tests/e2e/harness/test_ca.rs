//! The certificate authority a TLS test makes for itself with the openssl
//! CLI, and the settings that point redis-server and redis-cli at it. It
//! starts no process.

use std::path::PathBuf;
use std::process::Command;

use super::procs::require;

/// A certificate authority made for one test with the openssl CLI, with a
/// server certificate (localhost, 127.0.0.1) and a client certificate it
/// signed: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`.
pub struct TestCa {
    pub dir: PathBuf,
    /// Whether servers using it demand client certificates.
    pub auth_clients: bool,
}

impl TestCa {
    pub fn new(auth_clients: bool) -> Self {
        require("openssl", "`sudo apt-get install openssl`");
        let dir = std::env::temp_dir().join(format!(
            "oidc-bff-ca-{:x}-{}",
            rand::random::<u64>(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let sh = |script: &str| {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "openssl step failed: {script}");
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=oidc-bff-test-ca 2>/dev/null",
        );
        sh(
            "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null",
        );
        sh(
            "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile ext 2>/dev/null",
        );
        sh(
            "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=oidc-bff 2>/dev/null && printf 'extendedKeyUsage=clientAuth,serverAuth\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > cext && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 1 -extfile cext 2>/dev/null",
        );
        Self { dir, auth_clients }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// redis-server / Sentinel settings for TLS only on `port`. Replication
    /// (and Sentinel's connections to the servers) use TLS too, with the
    /// client certificate when the servers demand one.
    pub(super) fn server_settings(&self, port: u16) -> Vec<(String, String)> {
        let auth = if self.auth_clients { "yes" } else { "no" };
        [
            ("port", "0".to_owned()),
            ("tls-port", port.to_string()),
            ("tls-cert-file", self.file("server.pem")),
            ("tls-key-file", self.file("server.key")),
            ("tls-client-cert-file", self.file("client.pem")),
            ("tls-client-key-file", self.file("client.key")),
            ("tls-ca-cert-file", self.file("ca.pem")),
            ("tls-auth-clients", auth.to_owned()),
            ("tls-replication", "yes".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// `redis-cli` flags to reach a server using this CA.
    pub(super) fn cli_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            self.file("ca.pem"),
        ];
        if self.auth_clients {
            flags.extend([
                "--cert".to_owned(),
                self.file("client.pem"),
                "--key".to_owned(),
                self.file("client.key"),
            ]);
        }
        flags
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
