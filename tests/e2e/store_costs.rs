//! What a login and a stored session cost Redis: measurements, not
//! assertions of speed (ignored by default; `docs/benchmarks.md` holds the
//! figures and the command). Each runs on a Redis server of its own so no
//! other test's traffic is counted.
//!
//!     cargo test --test e2e store_costs -- --ignored --nocapture --test-threads=1

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use oidc_bff::secret::SecretString;
use oidc_bff::session::{ClientInfo, Lookup, NewLogin, Sessions};

use crate::harness::{Browser, GatewayBuilder, RedisServer, Upstream, random_prefix};
use crate::store_consistency::{Target, sessions_over};

/// `INFO commandstats` as command → calls.
fn command_calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The commands Redis ran for `logins` logins through `gw`, each as a new
/// user: command → calls per login (the measuring `INFO` left out).
async fn commands_per_login(
    redis: &RedisServer,
    gw: &crate::harness::Gateway,
    logins: u64,
) -> BTreeMap<String, f64> {
    // One login first: script loading and the shard key are once per process.
    Browser::new(gw).login_as("warm-up").await;
    let before = command_calls(redis);
    for n in 0..logins {
        let mut b = Browser::new(gw);
        b.login_as(&format!("login-cost-{n}")).await;
    }
    let after = command_calls(redis);
    after
        .iter()
        .filter_map(|(name, calls)| {
            let d = calls - before.get(name).copied().unwrap_or(0);
            (d > 0 && name != "info").then(|| (name.clone(), d as f64 / logins as f64))
        })
        .collect()
}

/// What the gateway sends: a login's store calls are all scripts (the
/// claim marker's `SET NX` too, which replaces a key of another type); the
/// other commands counted are the ones scripts run.
fn round_trips(per_login: &BTreeMap<String, f64>) -> f64 {
    per_login
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "evalsha" | "eval"))
        .map(|(_, n)| n)
        .sum()
}

/// On one Redis server (standalone, as with Sentinel) a login is two round
/// trips: the claim marker that makes the state single-use before the code
/// is spent, and one script that writes the provider-session entry, the
/// record and the user index together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_takes_two_redis_round_trips_on_one_server() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .redis(&redis.url())
        .start()
        .await;
    let per_login = commands_per_login(&redis, &gw, 5).await;
    assert_eq!(
        round_trips(&per_login),
        2.0,
        "commands per login: {per_login:?}"
    );
    assert_eq!(
        per_login.get("set"),
        Some(&1.0),
        "the claim marker (inside its script): {per_login:?}"
    );
    assert_eq!(
        per_login.get("evalsha"),
        Some(&2.0),
        "the claim marker and the create: {per_login:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored"]
async fn redis_commands_per_login() {
    const LOGINS: u64 = 50;
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .redis(&redis.url())
        .start()
        .await;
    let per_login = commands_per_login(&redis, &gw, LOGINS).await;
    for (name, n) in &per_login {
        eprintln!("{name}: {n:.2} per login");
    }
    eprintln!(
        "per login: {:.2} round trips (commands the gateway sends), {:.2} commands Redis runs (scripts' calls included)",
        round_trips(&per_login),
        per_login.values().sum::<f64>()
    );
    // What the sessions of these logins (the fixture provider's tokens, one
    // user each) hold in Redis, keys of every kind under the gateway's
    // prefix (single-use login markers included while they live).
    let sessions = LOGINS + 1;
    let (bytes, keys, by_kind) = bytes_under(&redis, &gw.prefix).await;
    let per_kind: Vec<String> = by_kind
        .iter()
        .map(|(k, b)| format!("{k}: {}", b / sessions))
        .collect();
    eprintln!(
        "fixture provider's tokens: {sessions} sessions, {keys} keys, {} B per session (by key kind {})",
        bytes / sessions,
        per_kind.join(", ")
    );
    let (record, _) = record_sizes(&redis, &gw.prefix).await;
    eprintln!(
        "fixture provider's tokens: stored record {record} B on average (jemalloc class {} B)",
        size_class(record + 6)
    );
}

/// The shape of the tokens a measurement stores.
#[derive(Debug, Clone, Copy)]
enum Tokens {
    /// Opaque strings of 1,200 / 400 / 1,000 characters (the figures of
    /// earlier measurements; nothing to pack).
    Synthetic,
    /// Keycloak-typical: RS256 JWT access (1,200 characters) and ID
    /// (1,000) tokens and a JWT refresh token (400), base64url of JSON and
    /// of a 256-byte signature.
    KeycloakLike,
}

/// A JWT-shaped token of `len` characters: a header, a JSON payload of
/// varied bytes, and (when it fits) an RS256-sized signature.
fn jwt_of(len: usize, seed: usize) -> String {
    jwt_with(len, seed, "")
}

/// [`jwt_of`] whose payload also holds `claims` (JSON members, e.g. the
/// user's claims in an ID token), padded to `len` by its `jti`.
fn jwt_with(len: usize, seed: usize, claims: &str) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(br#"{"alg":"RS256","typ":"JWT","kid":"kP4x9aVb0d8sZ-_c2Wq1nT7yU3mLr5eJ"}"#);
    let sig_bytes = if len > 800 { 256 } else { 32 };
    let mut x = (seed as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let sig: Vec<u8> = (0..sig_bytes).map(|_| next() as u8).collect();
    let sig = b64(&sig);
    let room = len.saturating_sub(header.len() + sig.len() + 2) * 3 / 4;
    let mut payload = format!("{{{claims}\"jti\":\"");
    while payload.len() + 2 < room {
        payload.push(char::from(b'a' + (next() % 26) as u8));
    }
    payload.push_str("\"}");
    format!("{header}.{}.{sig}", b64(payload.as_bytes()))
}

fn realistic_login(user: &str, n: usize, tokens: Tokens) -> NewLogin {
    let sid = format!("{user}-sid-{}", n % 2);
    let claims = format!(
        "\"sub\":\"{user}\",\"name\":\"A Person\",\"email\":\"{user}@example.com\",\"groups\":[\"staff\",\"dev\"]"
    );
    let (access, refresh, id) = match tokens {
        Tokens::Synthetic => ("a".repeat(1_200), "r".repeat(400), "i".repeat(1_000)),
        // The ID token carries the user's claims, as a provider's does
        // (same length as before they were in it).
        Tokens::KeycloakLike => (
            jwt_of(1_200, 3 * n),
            jwt_of(400, 3 * n + 1),
            jwt_with(1_000, 3 * n + 2, &format!("{claims},")),
        ),
    };
    NewLogin {
        sub: user.to_owned(),
        sid: Some(sid.clone()),
        access_token: SecretString::new(access),
        refresh_token: Some(SecretString::new(refresh)),
        id_token: Some(SecretString::new(id)),
        access_expires_at: 0,
        // What the login flow keeps of such an ID token (all but `jti`,
        // keys sorted as serde_json writes them): the same 90 B as ever.
        claims_json: format!(
            "{{\"email\":\"{user}@example.com\",\"groups\":[\"staff\",\"dev\"],\"name\":\"A Person\",\"sub\":\"{user}\"}}"
        ),
        scopes: Some("openid profile email".into()),
        dpop_key: None,
    }
}

/// MEMORY USAGE summed over every key under `prefix`, and by kind (`s`,
/// `u`, `x`/`sid`, ...).
async fn bytes_under(redis: &RedisServer, prefix: &str) -> (u64, u64, BTreeMap<String, u64>) {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut total = 0;
    let mut by_kind = BTreeMap::<String, u64>::new();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut c).await.expect("memory usage");
        for (k, size) in chunk.iter().zip(sizes) {
            let kind = k[prefix.len()..]
                .split(':')
                .next()
                .unwrap_or("?")
                .to_owned();
            let size = size.unwrap_or(0);
            *by_kind.entry(kind).or_default() += size;
            total += size;
        }
    }
    (total, keys.len() as u64, by_kind)
}

/// The jemalloc size class (Redis' allocator) an allocation of `n` bytes
/// takes: four classes per doubling above 64 B. A stored record is an sds
/// string: `n` is its length plus 6 (a 5-byte header and the NUL) for
/// records under 64 KiB.
fn size_class(n: u64) -> u64 {
    if n <= 64 {
        return n.div_ceil(16) * 16;
    }
    let step = 1u64 << (63 - (n - 1).leading_zeros() - 2);
    n.div_ceil(step) * step
}

/// The average length of the stored records (the `r` field of the session
/// hashes) under `prefix`, and how many there are.
async fn record_sizes(redis: &RedisServer, prefix: &str) -> (u64, u64) {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}s:*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    let mut total = 0;
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("HSTRLEN").arg(k).arg("r");
        }
        let lens: Vec<u64> = pipe.query_async(&mut c).await.expect("hstrlen");
        total += lens.iter().sum::<u64>();
    }
    (total / (keys.len().max(1) as u64), keys.len() as u64)
}

/// Writes `sessions` sessions; with `touched`, each is then used a minute
/// later, so its activity touch writes its activity key (`a:`), as every
/// session in use has one.
async fn fill(
    s: &Sessions,
    sessions: usize,
    users: usize,
    legacy: bool,
    tokens: Tokens,
    touched: bool,
) {
    let now = oidc_bff::clock::unix_now();
    futures_util::stream::iter(0..sessions)
        .map(|n| async move {
            let user = format!("user-{:05}", n % users);
            let login = realistic_login(&user, n, tokens);
            let (_, cookie) = if legacy {
                s.create_legacy(login, &ClientInfo::default(), now).await
            } else {
                s.create(login, &ClientInfo::default(), now).await
            }
            .expect("create");
            if touched {
                let pair = cookie.to_str().expect("ascii").split(';').next();
                let mut headers = http::HeaderMap::new();
                headers.insert(
                    http::header::COOKIE,
                    pair.expect("pair").parse().expect("header"),
                );
                let Ok(Lookup::Active(session)) = s.load(&headers, now + 60).await else {
                    panic!("the session opens");
                };
                assert!(
                    s.touch(&session, &ClientInfo::default(), now + 60)
                        .await
                        .expect("touch")
                );
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored"]
async fn redis_bytes_per_session_with_many_users() {
    let sessions: usize = std::env::var("COST_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let users = sessions / 5;
    let redis = RedisServer::start();
    let target = Target::Url(redis.url());
    let cases = [
        (false, Tokens::KeycloakLike, false),
        (false, Tokens::KeycloakLike, true),
        (false, Tokens::Synthetic, false),
        (true, Tokens::KeycloakLike, false),
    ];
    for (legacy, tokens, touched) in cases {
        let prefix = random_prefix();
        let s = Arc::new(sessions_over(
            crate::store_consistency::store_on(&target, &prefix),
            None,
        ));
        fill(&s, sessions, users, legacy, tokens, touched).await;
        let (bytes, keys, by_kind) = bytes_under(&redis, &prefix).await;
        let (record, _) = record_sizes(&redis, &prefix).await;
        let per_kind: Vec<String> = by_kind
            .iter()
            .map(|(k, b)| format!("{k}: {}", b / sessions as u64))
            .collect();
        let layout = match (legacy, touched) {
            (true, _) => "single-slot (old)",
            (false, false) => "sharded",
            (false, true) => "sharded, each session touched once (activity key)",
        };
        eprintln!(
            "{layout} layout, {tokens:?} tokens: {sessions} sessions of {users} users, {keys} keys, {} B per session (MEMORY USAGE over every key, indexes included; by key kind {}); stored record {record} B (jemalloc class {} B)",
            bytes / sessions as u64,
            per_kind.join(", "),
            size_class(record + 6)
        );
        // Free the memory before the next case.
        let client = redis::Client::open(redis.url()).expect("client");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let _: () = redis::cmd("FLUSHDB")
            .query_async(&mut c)
            .await
            .expect("flush");
    }
}
