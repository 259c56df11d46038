//! Real front proxies from Debian — nginx, Caddy, HAProxy — started on a
//! free loopback port in front of a gateway and an upstream, each with the
//! documented config from `config/front-proxies/` (the part docs show) and
//! a process wrapper of the harness's own (pid, logs and temp paths in a
//! private directory; foreground; no privileged port).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::procs::{Guarded, free_port, repo_root, require, spawn_guarded_to, wait_for_port};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
    Haproxy,
}

impl Kind {
    /// The documented config under `config/front-proxies/`.
    pub fn template(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx.conf",
            Kind::Caddy => "Caddyfile",
            Kind::Haproxy => "haproxy.cfg",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
            Kind::Haproxy => "haproxy",
        }
    }
}

/// The documented config's text.
pub fn template_text(name: &str) -> String {
    let path = repo_root().join("config/front-proxies").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct FrontProxy {
    /// `http://127.0.0.1:<port>`: what the browser talks to.
    pub base: String,
    dir: PathBuf,
    _proc: Guarded,
}

impl FrontProxy {
    /// A free port for a proxy started later (the gateway's `public_url`
    /// must name it before the proxy's config can name the gateway).
    pub fn reserve_port() -> u16 {
        free_port()
    }

    /// Starts `kind` on `port`, routing `/auth/*` to `gateway` and `/api/*`
    /// to `upstream` behind forward-auth.
    pub fn start(kind: Kind, port: u16, gateway: SocketAddr, upstream: SocketAddr) -> Self {
        require(
            kind.program(),
            &format!(
                "run scripts/test (it installs it) or `sudo apt-get install {}`",
                kind.program()
            ),
        );
        let dir = std::env::temp_dir().join(format!(
            "oidc-bff-{}-{port}-{}",
            kind.program(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("proxy dir");
        let site = template_text(kind.template())
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@GATEWAY@", &gateway.to_string())
            .replace("@UPSTREAM@", &upstream.to_string());
        let log = std::fs::File::create(dir.join("output.log")).expect("log file");
        let err = log.try_clone().expect("log file");
        let args = match kind {
            Kind::Nginx => nginx_args(&dir, &site),
            Kind::Caddy => caddy_args(&dir, &site),
            Kind::Haproxy => haproxy_args(&dir, &site),
        };
        let proc = spawn_guarded_to(&args[0], &args[1..], Stdio::from(log), Stdio::from(err));
        let p = Self {
            base: format!("http://127.0.0.1:{port}"),
            dir,
            _proc: proc,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "{} did not listen on {port}:\n{}",
            kind.program(),
            p.logs()
        );
        p
    }

    /// What the proxy wrote (its output and error log), for failure
    /// messages.
    pub fn logs(&self) -> String {
        ["output.log", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// nginx: the main config (pid, error log, temp paths in `dir`) includes
/// the documented server block.
fn nginx_args(dir: &Path, site: &str) -> Vec<String> {
    let d = path_str(dir);
    std::fs::write(dir.join("site.conf"), site).expect("site");
    let main = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 512; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("nginx.conf");
    [
        "nginx",
        "-p",
        &d,
        "-e",
        &format!("{d}/error.log"),
        "-c",
        &format!("{d}/nginx.conf"),
        "-g",
        "daemon off;",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Caddy: global options (no admin endpoint, no automatic HTTPS), then the
/// documented site; its data and config directories in `dir`.
fn caddy_args(dir: &Path, site: &str) -> Vec<String> {
    let d = path_str(dir);
    let file = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
    std::fs::write(dir.join("Caddyfile"), file).expect("Caddyfile");
    [
        "env",
        &format!("XDG_DATA_HOME={d}"),
        &format!("XDG_CONFIG_HOME={d}"),
        &format!("HOME={d}"),
        "caddy",
        "run",
        "--adapter",
        "caddyfile",
        "--config",
        &format!("{d}/Caddyfile"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// HAProxy: `global` loads the shipped Lua action, `defaults` sets the
/// timeouts, then the documented frontend and backends; foreground (`-db`).
fn haproxy_args(dir: &Path, site: &str) -> Vec<String> {
    let d = path_str(dir);
    let lua = repo_root().join("config/front-proxies/oidc-bff-forward-auth.lua");
    let file = format!(
        "global\n    lua-load {}\n\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n{site}",
        path_str(&lua)
    );
    std::fs::write(dir.join("haproxy.cfg"), file).expect("haproxy.cfg");
    ["haproxy", "-db", "-f", &format!("{d}/haproxy.cfg")]
        .map(str::to_owned)
        .to_vec()
}
