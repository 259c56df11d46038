//! Real external processes for the tests: `redis-server` and the
//! `oidc-provider` fixture, each on a free loopback port.
//!
//! Children are started through a tiny shell wrapper that kills them when
//! our stdin pipe closes, so a test binary that dies (or is killed) never
//! leaves servers behind.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TestCa;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port free now, for a server a test starts on a port of its
/// choosing. Taken below Linux's ephemeral range (32768–60999 by default),
/// in turn from a place that depends on the process ID: `bind(0)` (the
/// in-process gateways and upstreams) and outgoing connections never get
/// such a port, and this process does not hand it out again before 12,000
/// others. A port from `bind(0)` instead can come back to a later
/// `bind(0)` once its listener is closed and before the server it was
/// meant for binds it: a test's requests then reached another test's
/// in-process gateway (seen: an audit trail holding another test's login).
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        std::sync::atomic::AtomicU32::new(std::process::id().wrapping_mul(7_919) % COUNT)
    });
    for _ in 0..COUNT {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + n).expect("below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub(super) fn require(cmd: &str, hint: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{cmd}` is not installed: {hint}");
}

/// A process that dies with its stdin.
pub(super) struct Guarded {
    pub(super) child: Child,
    _stdin: ChildStdin,
}

fn spawn_guarded(program: &str, args: &[String], stdout: Stdio) -> Guarded {
    spawn_guarded_to(program, args, stdout, Stdio::inherit())
}

pub(super) fn spawn_guarded_to(
    program: &str,
    args: &[String],
    stdout: Stdio,
    stderr: Stdio,
) -> Guarded {
    // The program runs in the background; the `read` loop ends when our pipe
    // closes (we dropped the guard or died), and then the program is told to
    // stop. SIGTERM is not always enough: a Redis replica that is writing its
    // first AOF after a sync refuses it ("can't exit") and would keep the
    // test waiting for ever, so a SIGKILL follows 5 s later.
    let script = r#"prog="$1"; shift; "$prog" "$@" <&- & pid=$!; trap 'kill $pid 2>/dev/null' EXIT; while read -r _; do :; done; kill $pid 2>/dev/null; (sleep 5; kill -9 $pid 2>/dev/null) </dev/null >/dev/null 2>&1 & wait $pid 2>/dev/null"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("sh").arg(program).args(args);
    cmd.stdin(Stdio::piped()).stdout(stdout).stderr(stderr);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let stdin = child.stdin.take().expect("stdin pipe");
    Guarded {
        child,
        _stdin: stdin,
    }
}

/// `openssl s_server -www` on `port`: a real TLS server, with `ca`'s server
/// certificate, that answers any GET with 200 and an HTML status page (an
/// HTTPS upstream for tests).
pub struct TlsStatusServer {
    pub port: u16,
    _proc: Guarded,
}

impl TlsStatusServer {
    pub fn start(ca: &TestCa) -> Self {
        Self::start_with(ca, &[])
    }

    /// One that refuses clients without a certificate signed by `ca`.
    pub fn start_verifying(ca: &TestCa) -> Self {
        Self::start_with(ca, &["-Verify", "1", "-CAfile", &ca.file("ca.pem")])
    }

    fn start_with(ca: &TestCa, extra: &[&str]) -> Self {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "s_server".into(),
            "-accept".into(),
            format!("127.0.0.1:{port}"),
            "-cert".into(),
            ca.file("server.pem"),
            "-key".into(),
            ca.file("server.key"),
            "-www".into(),
            "-quiet".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = spawn_guarded("openssl", &args, Stdio::null());
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "openssl s_server did not start on {port}"
        );
        Self { port, _proc: proc }
    }
}

/// A real `redis-server` with persistence in a private directory, so a
/// restart keeps its data (outage tests).
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Guarded>,
    /// Arguments beyond the defaults, kept for restarts.
    extra: Vec<String>,
    /// TLS only, with certificates from this CA's directory.
    tls: Option<Arc<TestCa>>,
    /// ACLs on: the users beyond [`ACL_ADMIN`] (kept for replicas).
    acl: Option<Vec<String>>,
}

/// The user with every right that the tests' own `redis-cli`, replication
/// and Sentinel's links to the servers log in as when ACLs are on (the
/// `default` user is then off).
pub const ACL_ADMIN: &str = "test-admin";
/// Its password.
pub const ACL_ADMIN_PASSWORD: &str = "test-admin-password-41c7";

/// The ACL directives of a server or Sentinel with ACLs on: `default` off,
/// [`ACL_ADMIN`] with every right, and `users` (each the rules of one
/// `user` directive, its name first).
fn acl_directives(users: &[String]) -> Vec<String> {
    let mut out = vec![
        "default off".to_owned(),
        format!("{ACL_ADMIN} on >{ACL_ADMIN_PASSWORD} ~* &* +@all"),
    ];
    out.extend(users.iter().cloned());
    out
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(Vec::new(), None)
    }

    /// A server replicating `master` (for Sentinel tests), over TLS if the
    /// master speaks it.
    /// With ACLs on the master, the replica has the same users (ACLs are
    /// not replicated) and replicates as [`ACL_ADMIN`].
    pub fn start_replica(master: &RedisServer) -> Self {
        Self::start_full(
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
            master.tls.clone(),
            master.acl.clone(),
        )
    }

    /// A server with ACLs on: `default` off, [`ACL_ADMIN`] for the test's
    /// own commands and for replication (either server may become the
    /// master), and `users` (each the rules of one `user` directive, its
    /// name first: `"gw on >pw ~p:* +get"`).
    pub fn start_with_acl(users: &[&str]) -> Self {
        Self::start_full(
            Vec::new(),
            None,
            Some(users.iter().map(|u| u.to_string()).collect()),
        )
    }

    /// A server speaking only TLS, with a certificate for 127.0.0.1 and
    /// localhost from `ca`.
    pub fn start_tls(ca: &Arc<TestCa>) -> Self {
        Self::start_with(Vec::new(), Some(ca.clone()))
    }

    fn start_with(extra: Vec<String>, tls: Option<Arc<TestCa>>) -> Self {
        Self::start_full(extra, tls, None)
    }

    fn start_full(
        mut extra: Vec<String>,
        tls: Option<Arc<TestCa>>,
        acl: Option<Vec<String>>,
    ) -> Self {
        if let Some(users) = &acl {
            for user in acl_directives(users) {
                extra.push("--user".into());
                extra.extend(user.split(' ').map(str::to_owned));
            }
            extra.extend([
                "--masteruser".into(),
                ACL_ADMIN.into(),
                "--masterauth".into(),
                ACL_ADMIN_PASSWORD.into(),
            ]);
        }
        require(
            "redis-server",
            "run scripts/test (it installs it) or `sudo apt-get install redis-server`",
        );
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("oidc-bff-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Self {
            port,
            dir,
            proc: None,
            extra,
            tls,
            acl,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs one command with `redis-cli`; its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, self.tls.as_deref(), self.acl.is_some(), args)
    }

    pub fn restart(&mut self) {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir.to_str().expect("utf-8 path"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(ca) = &self.tls {
            for (k, v) in ca.server_settings(self.port) {
                args.push(format!("--{k}"));
                args.push(v);
            }
        }
        args.extend(self.extra.iter().cloned());
        self.proc = Some(spawn_guarded("redis-server", &args, Stdio::null()));
        assert!(
            // Generous: six cluster nodes starting at once on a loaded
            // 2-core machine have taken more than 10 s.
            wait_for_port(self.port, Duration::from_secs(30)),
            "redis-server did not start on {}",
            self.port
        );
    }

    /// Stops the server (SIGKILL-like: the wrapper kills it).
    pub fn stop(&mut self) {
        if let Some(mut g) = self.proc.take() {
            drop(g._stdin);
            let _ = g.child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `oidc-provider` fixture (tests/provider).
/// A Redis Cluster of `primaries` primaries with `replicas` replicas each,
/// its slots spread over them by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(primaries: usize, replicas: usize) -> Self {
        Self::start_with(primaries, replicas, None, None)
    }

    /// The same with ACLs on every node: `default` off, [`ACL_ADMIN`] for
    /// the test's own commands, `redis-cli --cluster create` and
    /// replication (`masteruser`/`masterauth`; the cluster bus itself has
    /// no login), and `users` (each the rules of one `user` directive, its
    /// name first).
    pub fn start_with_acl(primaries: usize, replicas: usize, users: &[&str]) -> Self {
        let users = users.iter().map(|u| u.to_string()).collect();
        Self::start_with(primaries, replicas, None, Some(users))
    }

    /// The same, every node speaking only TLS (bus included) with `ca`'s
    /// certificates.
    pub fn start_tls(primaries: usize, replicas: usize, ca: &Arc<TestCa>) -> Self {
        Self::start_with(primaries, replicas, Some(ca.clone()), None)
    }

    fn start_with(
        primaries: usize,
        replicas: usize,
        tls: Option<Arc<TestCa>>,
        acl: Option<Vec<String>>,
    ) -> Self {
        let mut args = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"];
        if tls.is_some() {
            args.extend(["--tls-cluster", "yes"]);
        }
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                let mut node: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                // The bus port, free like the client port. Left to Redis it
                // is the client port + 10000: with an ephemeral client port
                // that may be another test's connection, or beyond 65535,
                // and the node does not start (seen once in CI).
                node.extend(["--cluster-port".to_owned(), free_port().to_string()]);
                RedisServer::start_full(node, tls.clone(), acl.clone())
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let ok = Command::new("redis-cli")
            .args(tls.as_deref().map(TestCa::cli_flags).unwrap_or_default())
            .args(cli_login(acl.is_some()))
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "redis-cli --cluster create failed for {addrs:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        // Every node agrees the cluster is ok, and every replica has synced.
        while !nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                && (n.cli(&["ROLE"]).starts_with("master")
                    || n.cli(&["INFO", "replication"])
                        .contains("master_link_status:up"))
        }) {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { nodes }
    }

    /// A new primary, empty and serving no slot, joined to the cluster
    /// (`CLUSTER MEET`, as `redis-cli --cluster add-node` does), with the
    /// other nodes' settings (TLS, ACLs). Returns its index in
    /// [`Self::nodes`] once every node lists it as a connected primary and
    /// it sees the cluster up.
    pub fn add_primary(&mut self) -> usize {
        let first = &self.nodes[0];
        let (tls, acl) = (first.tls.clone(), first.acl.clone());
        let bus = free_port();
        let mut args: Vec<String> = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if tls.is_some() {
            args.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
        }
        args.extend(["--cluster-port".to_owned(), bus.to_string()]);
        let node = RedisServer::start_full(args, tls, acl);
        let id = node.cli(&["CLUSTER", "MYID"]).trim().to_owned();
        let (port, bus) = (node.port.to_string(), bus.to_string());
        let met = first.cli(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
        assert_eq!(met.trim(), "OK", "CLUSTER MEET: {met}");
        self.nodes.push(node);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "NODES"]).lines().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.first() == Some(&id.as_str())
                    && fields.get(2).is_some_and(|f| {
                        f.split(',').any(|f| f == "master")
                            && !f.contains("handshake")
                            && !f.contains("fail")
                    })
                    && fields.get(7) == Some(&"connected")
            })
        }) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not take the new node in"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The new node answers `CLUSTERDOWN` (a MIGRATE to it fails) until
        // it has learnt every slot's owner from the others.
        let added = &self.nodes[self.nodes.len() - 1];
        while !added.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(
                Instant::now() < deadline,
                "the new node did not learn the slot map"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.nodes.len() - 1
    }

    /// `host:port` of every node, for `store.cluster_nodes`.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }
}

/// A Redis Sentinel watching one master, with failover after one second
/// of silence (one Sentinel, quorum 1: enough to fail over on its own;
/// or one of several, see [`SentinelProcess::start_several_with_acl`]).
pub struct SentinelProcess {
    pub port: u16,
    dir: PathBuf,
    tls: Option<Arc<TestCa>>,
    /// ACLs on (`default` off).
    acl: bool,
    _proc: Guarded,
}

impl SentinelProcess {
    /// A Sentinel for `master`, speaking TLS if the master does, and
    /// reaching it as [`ACL_ADMIN`] if the master has ACLs on.
    pub fn start(master_name: &str, master: &RedisServer) -> Self {
        Self::start_full(master_name, master, None, 1)
    }

    /// [`Self::start`], with ACLs on the Sentinel itself: `default` off,
    /// [`ACL_ADMIN`] for the test's own commands, and `users` (each the
    /// rules of one `user` directive, its name first).
    pub fn start_with_acl(master_name: &str, master: &RedisServer, users: &[&str]) -> Self {
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        Self::start_full(master_name, master, Some(users), 1)
    }

    /// `count` Sentinels as [`Self::start_with_acl`] makes one, with a
    /// quorum of a majority of them, logging in to each other as
    /// [`ACL_ADMIN`] (`sentinel sentinel-user` / `sentinel sentinel-pass`).
    /// They find each other through the master's hello channel.
    pub fn start_several_with_acl(
        count: usize,
        master_name: &str,
        master: &RedisServer,
        users: &[&str],
    ) -> Vec<Self> {
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        (0..count)
            .map(|_| Self::start_full(master_name, master, Some(users.clone()), count / 2 + 1))
            .collect()
    }

    fn start_full(
        master_name: &str,
        master: &RedisServer,
        acl: Option<Vec<String>>,
        quorum: usize,
    ) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("oidc-bff-sentinel-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        // down-after 3.1 s: a Sentinel starved of CPU on a loaded test
        // machine enters TILT (a 30 s pause), and afterwards refuses a
        // replica that was cut off for more than 10 × down-after; 31 s
        // covers the pause, 10 s did not (the failover was then aborted
        // for good: `-failover-abort-no-good-slave`).
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
             sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n\
             sentinel down-after-milliseconds {master_name} 3100\n\
             sentinel failover-timeout {master_name} 10000\n",
            dir = dir.display(),
            master_port = master.port,
        );
        if let Some(ca) = &master.tls {
            for (k, v) in ca.server_settings(port) {
                conf.push_str(&format!("{k} {v}\n"));
            }
        }
        if master.acl.is_some() {
            conf.push_str(&format!(
                "sentinel auth-user {master_name} {ACL_ADMIN}\n\
                 sentinel auth-pass {master_name} {ACL_ADMIN_PASSWORD}\n"
            ));
        }
        if let Some(users) = &acl {
            for user in acl_directives(users) {
                conf.push_str(&format!("user {user}\n"));
            }
            // The links to the other Sentinels (none with one Sentinel).
            conf.push_str(&format!(
                "sentinel sentinel-user {ACL_ADMIN}\nsentinel sentinel-pass {ACL_ADMIN_PASSWORD}\n"
            ));
        }
        let conf_file = dir.join("sentinel.conf");
        std::fs::write(&conf_file, conf).expect("sentinel.conf");
        let args = vec![
            conf_file.to_string_lossy().into_owned(),
            "--sentinel".into(),
            "--loglevel".into(),
            "notice".into(),
        ];
        let proc = spawn_guarded("redis-server", &args, Stdio::null());
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "redis sentinel did not start on {port}"
        );
        Self {
            port,
            dir,
            tls: master.tls.clone(),
            acl: acl.is_some(),
            _proc: proc,
        }
    }

    /// Runs one command with `redis-cli` against this Sentinel.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, self.tls.as_deref(), self.acl, args)
    }

    /// What Sentinel logged (its events: `+sdown`, `+switch-master`,
    /// `+convert-to-slave`, …), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }

    /// The port of the server this Sentinel names as master now.
    pub fn master_port(&self, master_name: &str) -> Option<u16> {
        self.cli(&["SENTINEL", "get-master-addr-by-name", master_name])
            .lines()
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }
}

/// Runs one command with `redis-cli` against the server on `port`, as
/// [`ACL_ADMIN`] if `acl`; its raw output (empty when it failed).
fn redis_cli(port: u16, tls: Option<&TestCa>, acl: bool, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .args(cli_login(acl))
        .args(tls.map(TestCa::cli_flags).unwrap_or_default())
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// `redis-cli`'s login as [`ACL_ADMIN`] if `acl`, else none.
fn cli_login(acl: bool) -> &'static [&'static str] {
    if acl {
        &[
            "--user",
            ACL_ADMIN,
            "--pass",
            ACL_ADMIN_PASSWORD,
            "--no-auth-warning",
        ]
    } else {
        &[]
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct ProviderProcess {
    pub issuer: String,
    _proc: Guarded,
}

pub fn provider_dir() -> PathBuf {
    repo_root().join("tests").join("provider")
}

impl ProviderProcess {
    /// A provider on `port` whose signing key lives in `jwks` (made on
    /// first start, reused by a restart on the same port: a key rotation
    /// is a restart with another file).
    pub fn with_key_file(port: u16, jwks: &Path) -> Self {
        Self::start(&[
            "--port",
            &port.to_string(),
            "--jwks-file",
            jwks.to_str().expect("utf-8 path"),
        ])
    }

    pub fn start(extra_args: &[&str]) -> Self {
        require(
            "node",
            "install Node.js 20 (`sudo apt-get install nodejs npm`)",
        );
        let dir = provider_dir();
        assert!(
            Path::new(&dir.join("node_modules").join("oidc-provider")).exists(),
            "the provider fixture's packages are missing: run `npm ci --prefix tests/provider` (scripts/test does it)"
        );
        let mut args = vec![
            dir.join("server.mjs").to_string_lossy().into_owned(),
            "--test-api".to_owned(),
            "--port".to_owned(),
            "0".to_owned(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut g = spawn_guarded("node", &args, Stdio::piped());
        let stdout = g.child.stdout.take().expect("provider stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("provider ready line");
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("provider printed {line:?}: {e}"));
        let issuer = v["issuer"].as_str().expect("issuer").to_owned();
        Self { issuer, _proc: g }
    }
}

/// The real `oidc-bff` binary, running a test configuration.
pub struct GatewayProcess {
    _proc: Guarded,
    config: PathBuf,
}

impl GatewayProcess {
    /// Starts `oidc-bff serve`; its output goes to `log` (both streams) or
    /// nowhere.
    /// `env` is added to its environment (through `env(1)`, which execs the
    /// gateway, so the guard still stops the gateway itself).
    pub fn start(config: &Path, port: u16, log: Option<&Path>, env: &[(String, String)]) -> Self {
        let bin = env!("CARGO_BIN_EXE_oidc-bff");
        let mut args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.extend([
            bin.to_owned(),
            "serve".to_owned(),
            "--config".to_owned(),
            config.to_string_lossy().into_owned(),
        ]);
        let bin = "env";
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).expect("log file");
                let copy = file.try_clone().expect("log file");
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::inherit()),
        };
        let g = spawn_guarded_to(bin, &args, stdout, stderr);
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "oidc-bff process did not listen on {port}"
        );
        Self {
            _proc: g,
            config: config.to_owned(),
        }
    }
}

impl GatewayProcess {
    /// The gateway's own process ID: the child of the guard's shell.
    pub fn pid(&self) -> u32 {
        let shell = self._proc.child.id();
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| proc_stat(*pid).is_some_and(|f| f.get(1) == Some(&shell.to_string())))
            .expect("the gateway process under its guard")
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, `"INT"`) to the gateway.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([format!("-{name}"), pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} failed");
    }

    /// Stops the whole gateway process (SIGSTOP) and waits until the
    /// kernel reports it stopped: from then on, what reaches its sockets
    /// waits in their buffers, and it sees all of it at once after
    /// [`Self::resume`].
    pub fn pause(&self) {
        let pid = self.pid();
        self.signal("STOP");
        // Every thread: the main one may stop before a worker does.
        let stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .expect("the gateway's threads")
                .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .all(|tid| {
                    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
                        .ok()
                        .and_then(|t| Some(t.rsplit_once(')')?.1.split_whitespace().next()? == "T"))
                        .unwrap_or(true)
                })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(Instant::now() < deadline, "the gateway did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets a paused gateway run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// The gateway's exit code once it has exited, polling until `within`;
    /// `None` if it is still running then (or died by a signal).
    pub async fn wait_exit(&self, within: Duration) -> Option<i32> {
        let pid = self.pid();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            // Nobody reaps it while the guard's shell waits on stdin: a
            // zombie keeps its wait status (field 52 of stat).
            match proc_stat(pid) {
                Some(f) if f[0] == "Z" => {
                    let status: i32 = f.get(49)?.parse().ok()?;
                    return (status & 0x7f == 0).then_some(status >> 8);
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                None => return None,
            }
        }
        None
    }
}

/// `/proc/PID/stat` after the command name: state, ppid, …
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}
