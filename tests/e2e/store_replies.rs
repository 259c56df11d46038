//! A Redis that answers badly at the protocol level (a broken or
//! compromised server, a proxy in front of it, a server in a bad state),
//! played by the scripted [`RespProxy`] in front of a real Redis: every
//! reply the gateway does not expect is an outage answer (503, JSON for API
//! calls, a page for navigations) within `store.timeout`, never a logout
//! of a session that still exists, never a hang; and the gateway recovers
//! once the store answers well again.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::resp::bulk;
use crate::harness::{Act, Browser, GatewayBuilder, RedisServer, RespProxy, Upstream};

pub(crate) const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Text only the `GET` script (a session lookup) contains.
pub(crate) const GET_SCRIPT: &str = "local t, bad = read('GET', KEYS[2])";
/// Text only the `REVOKE` script (a logout) contains.
const REVOKE_SCRIPT: &str = "if not uk or u ~= ARGV[4] then return {3, ''} end";

/// A gateway whose store is `proxy`, without the session cache (every
/// lookup reaches the store).
async fn gateway(upstream: &Upstream, proxy: &RespProxy) -> crate::harness::Gateway {
    GatewayBuilder::new(upstream)
        .redis(&proxy.url())
        .store_timeout(STORE_TIMEOUT)
        .configure(|c| c.store.cache_entries = 0)
        .start()
        .await
}

/// A Redis of its own behind a proxy, a gateway on the proxy, and alice
/// logged in.
async fn logged_in() -> (
    RedisServer,
    RespProxy,
    Upstream,
    crate::harness::Gateway,
    Browser,
) {
    let redis = RedisServer::start();
    let proxy = RespProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &proxy).await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
    (redis, proxy, upstream, gw, b)
}

/// Asserts an API call and a navigation both get the store's outage
/// answer, within the timeout, and that nothing was forwarded.
pub(crate) async fn assert_outage(b: &mut Browser, upstream: &Upstream, what: &str) {
    let before = upstream.count();
    let started = Instant::now();
    let r = b.get("/api/a").await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {r:?}");
    assert_eq!(r.json()["error"], "store_unavailable", "{what}: {r:?}");
    assert!(
        took < 2 * STORE_TIMEOUT + Duration::from_secs(1),
        "{what}: 503 took {took:?}"
    );
    let r = b.navigate("/api/a").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {r:?}");
    assert!(r.body.contains("<html"), "{what}: a page: {}", r.body);
    assert!(
        b.session_cookie().is_some(),
        "{what}: the session cookie was kept"
    );
    assert_eq!(upstream.count(), before, "{what}: nothing forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lookup_answered_with_a_reply_the_script_never_gives_is_an_outage_not_a_logout() {
    let (_redis, proxy, upstream, _gw, mut b) = logged_in().await;
    for (what, reply) in [
        ("+OK", b"+OK\r\n".to_vec()),
        ("an integer code the script has not", b":7\r\n".to_vec()),
        ("a negative integer", b":-1\r\n".to_vec()),
        (
            "an array of three",
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n".to_vec(),
        ),
        ("an empty array", b"*0\r\n".to_vec()),
        (
            "a pair whose record is an integer",
            b"*2\r\n:1\r\n:2\r\n".to_vec(),
        ),
        ("a tombstone that is an integer", b"*1\r\n:1\r\n".to_vec()),
        ("a RESP3 double", b",1.5\r\n".to_vec()),
        ("a RESP3 map", b"%1\r\n+a\r\n+b\r\n".to_vec()),
        ("a RESP3 boolean", b"#t\r\n".to_vec()),
        ("arrays nested 150 deep", {
            let mut r = b"*1\r\n".repeat(150);
            r.extend_from_slice(b":1\r\n");
            r
        }),
        ("RESP3 maps nested 150 deep", {
            let mut r = b"%1\r\n+k\r\n".repeat(150);
            r.extend_from_slice(b":1\r\n");
            r
        }),
        ("a bulk length that is no number", b"$abc\r\n".to_vec()),
        ("a type byte RESP does not have", b"^x\r\n".to_vec()),
    ] {
        proxy.rule(move |c| {
            c.runs_script_with(GET_SCRIPT)
                .then(|| Act::Reply(reply.clone()))
        });
        assert_outage(&mut b, &upstream, what).await;
    }
    proxy.clear();
    assert_eq!(
        b.get("/api/a").await.status,
        StatusCode::OK,
        "the session was there all along"
    );
}

/// The error replies of a server in a bad state, each as a session lookup's
/// answer.
const BAD_STATES: &[&str] = &[
    "-LOADING Redis is loading the dataset in memory\r\n",
    "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
    "-READONLY You can't write against a read only replica.\r\n",
    "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
    "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    "-NOPERM User gateway has no permissions to run the 'evalsha' command\r\n",
    "-CLUSTERDOWN The cluster is down\r\n",
    "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
    "-MOVED 3999 127.0.0.1:1\r\n",
    "-ASK 3999 127.0.0.1:1\r\n",
    "-ERR Error running script (call to f_0123): @user_script:1: something\r\n",
    "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    "!21\r\nSYNTAX invalid syntax\r\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lookup_refused_by_a_server_in_a_bad_state_is_an_outage_then_recovers() {
    let (_redis, proxy, upstream, _gw, mut b) = logged_in().await;
    for reply in BAD_STATES {
        let bytes = reply.as_bytes().to_vec();
        proxy.rule(move |c| {
            c.runs_script_with(GET_SCRIPT)
                .then(|| Act::Reply(bytes.clone()))
        });
        assert_outage(&mut b, &upstream, reply.trim_end()).await;
    }
    proxy.clear();
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_the_store_answers_badly_fails_with_503_and_leaves_the_session_usable() {
    let (_redis, proxy, upstream, _gw, mut b) = logged_in().await;
    let mut replies: Vec<(String, Vec<u8>)> = BAD_STATES
        .iter()
        .map(|r| (r.trim_end().to_owned(), r.as_bytes().to_vec()))
        .collect();
    replies.extend([
        (
            "a code REVOKE never answers".to_owned(),
            b"*2\r\n:7\r\n$0\r\n\r\n".to_vec(),
        ),
        (
            "a negative code".to_owned(),
            b"*2\r\n:-1\r\n$0\r\n\r\n".to_vec(),
        ),
        ("+OK".to_owned(), b"+OK\r\n".to_vec()),
        ("nil".to_owned(), b"$-1\r\n".to_vec()),
        ("an array of one".to_owned(), b"*1\r\n:1\r\n".to_vec()),
    ]);
    for (what, reply) in replies {
        proxy.rule(move |c| {
            c.runs_script_with(REVOKE_SCRIPT)
                .then(|| Act::Reply(reply.clone()))
        });
        let r = b
            .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
            .await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {r:?}");
        assert!(b.session_cookie().is_some(), "{what}: cookie kept");
        proxy.clear();
        assert_eq!(
            b.get("/api/a").await.status,
            StatusCode::OK,
            "{what}: the session still works, and the user was told the logout failed"
        );
    }
    let _ = upstream;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_declaring_512_mb_that_never_arrives_is_an_outage_within_the_timeout_and_the_connection_is_replaced()
 {
    let (_redis, proxy, upstream, _gw, mut b) = logged_in().await;
    let before = proxy.connections();
    // Declared and then silent.
    proxy.rule(|c| {
        c.runs_script_with(GET_SCRIPT)
            .then(|| Act::Reply(b"$536870912\r\n".to_vec()))
    });
    assert_outage(&mut b, &upstream, "$536870912 then nothing").await;
    // Declared and trickled, a byte every 20 ms, forever.
    proxy.rule(|c| {
        c.runs_script_with(GET_SCRIPT).then(|| Act::Trickle {
            head: b"$536870912\r\n".to_vec(),
            filler: b'x',
            every: Duration::from_millis(20),
        })
    });
    assert_outage(&mut b, &upstream, "$536870912 trickled").await;
    // An array that never ends, trickled.
    proxy.rule(|c| {
        c.runs_script_with(GET_SCRIPT).then(|| Act::Trickle {
            head: b"*10000000\r\n".to_vec(),
            filler: b'_',
            every: Duration::from_millis(5),
        })
    });
    assert_outage(&mut b, &upstream, "*10000000 trickled").await;
    proxy.clear();
    super::store_outage::wait_until_ok(&mut b, "/api/a").await;
    assert!(
        proxy.connections() > before,
        "the connection that carried the endless reply was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_from_the_server_are_loaded_again_without_an_error() {
    let (_redis, proxy, _upstream, _gw, mut b) = logged_in().await;
    for _ in 0..3 {
        proxy.forget_scripts();
        assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
    }
    let loads = proxy
        .seen()
        .iter()
        .filter(|c| c.name() == "SCRIPT" && c.arg(1).eq_ignore_ascii_case("LOAD"))
        .count();
    assert!(loads >= 4, "each flush was followed by a load ({loads})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_frame_arriving_unasked_on_the_store_connection_changes_no_answer() {
    let (_redis, proxy, _upstream, _gw, mut b) = logged_in().await;
    for frame in [
        &b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nabc\r\n"[..],
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
        b">1\r\n$3\r\nodd\r\n",
        b">0\r\n",
    ] {
        proxy.push_all(frame).await;
        let r = b.get("/api/a").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}: {r:?}",
            String::from_utf8_lossy(frame)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_answers_with_replies_of_other_commands_is_replaced_at_once() {
    let (_redis, proxy, upstream, _gw, mut b) = logged_in().await;
    let before = proxy.connections();
    // From a lookup on, the connection answers with a stream of replies
    // that belong to no command (a proxy in front of Redis that lost
    // track): every later command on it would get one of them.
    proxy.rule(|c| {
        c.runs_script_with(GET_SCRIPT).then(|| Act::Flood {
            head: Vec::new(),
            filler: b"*3\r\n:1\r\n:2\r\n:3\r\n".to_vec(),
            total: 1 << 30,
        })
    });
    assert_outage(&mut b, &upstream, "replies of another command").await;
    proxy.clear();
    let r = b.get("/api/a").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the next request went over a new connection: {r:?}"
    );
    assert!(proxy.connections() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_client_tracking_leaves_the_cache_off_with_a_warning_and_nothing_stale()
 {
    let redis = RedisServer::start();
    let proxy = RespProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    // A Redis-compatible server without server-assisted client caching.
    proxy.rule(|c| {
        (c.name() == "CLIENT" && c.arg(1).eq_ignore_ascii_case("TRACKING")).then(|| {
            Act::Reply(b"-ERR unknown subcommand 'TRACKING'. Try CLIENT HELP.\r\n".to_vec())
        })
    });
    let upstream = Upstream::start().await;
    let log = std::env::temp_dir().join(format!(
        "oidc-bff-no-tracking-{:x}.log",
        rand::random::<u32>()
    ));
    // The session cache is on by default.
    let gw = GatewayBuilder::new(&upstream)
        .redis(&proxy.url())
        .metrics()
        .log_to(&log)
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    for _ in 0..3 {
        assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
    }
    let text =
        crate::harness::log_once_it_has(&log, "cannot set up the invalidation connection").await;
    let line = text
        .lines()
        .find(|l| l.contains("cannot set up the invalidation connection"))
        .unwrap_or_else(|| panic!("a warning names why the cache is off:\n{text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("CLIENT TRACKING refused"), "{line}");
    assert!(
        line.contains("unknown subcommand"),
        "the server's reason: {line}"
    );
    let scrape = gw.scrape().await;
    assert!(
        scrape.contains("oidc_bff_session_cache_tracking_up 0"),
        "{scrape}"
    );
    assert!(
        scrape.contains("oidc_bff_session_cache_lookups_total{outcome=\"hit\"} 0")
            && scrape.contains("oidc_bff_session_cache_lookups_total{outcome=\"bypass\"} 3"),
        "every lookup read through the cache: {scrape}"
    );
    // A session ended behind the gateway's back (no invalidation can come)
    // is refused at the next request: the cache reads through.
    let (mut direct, keys) = session_records(&redis.url(), &gw.prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: i64 = redis::cmd("DEL")
        .arg(&keys[0])
        .query_async(&mut direct)
        .await
        .expect("DEL");
    assert_eq!(b.get("/api/a").await.status, StatusCode::UNAUTHORIZED);
}

/// A `SENTINEL MASTERS` reply: one master `sessions` with these fields
/// (flat name, value pairs, as RESP2 sends a map).
fn masters_reply(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("*1\r\n*{}\r\n", fields.len() * 2).into_bytes();
    for (k, v) in fields {
        out.extend(bulk(k.as_bytes()));
        out.extend(bulk(v.as_bytes()));
    }
    out
}

/// A `SENTINEL GET-MASTER-ADDR-BY-NAME` reply.
fn addr_reply(host: &str, port: &str) -> Vec<u8> {
    let mut out = b"*2\r\n".to_vec();
    out.extend(bulk(host.as_bytes()));
    out.extend(bulk(port.as_bytes()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_answers_badly_is_passed_over_for_the_next_one() {
    const MASTER: &str = "sessions";
    let master = RedisServer::start();
    let replica = RedisServer::start_replica(&master);
    let sentinel = crate::harness::SentinelProcess::start(MASTER, &master);
    let upstream = Upstream::start().await;
    let rport = replica.port.to_string();
    let named = |ip: &str, port: &str| {
        masters_reply(&[
            ("name", MASTER),
            ("ip", ip),
            ("port", port),
            ("flags", "master"),
        ])
    };
    let cases: Vec<(&str, Act, Act)> = vec![
        (
            "nil",
            Act::Reply(b"*-1\r\n".to_vec()),
            Act::Reply(b"*-1\r\n".to_vec()),
        ),
        (
            "an integer",
            Act::Reply(b":1\r\n".to_vec()),
            Act::Reply(b":1\r\n".to_vec()),
        ),
        (
            "an error",
            Act::Reply(b"-IDONTKNOW No such master with that name\r\n".to_vec()),
            Act::Reply(b"-ERR unknown\r\n".to_vec()),
        ),
        (
            "fields missing",
            Act::Reply(b"*1\r\n$9\r\n127.0.0.1\r\n".to_vec()),
            Act::Reply(masters_reply(&[("name", MASTER), ("ip", "127.0.0.1")])),
        ),
        (
            "a non-numeric port",
            Act::Reply(addr_reply("127.0.0.1", "63x9")),
            Act::Reply(named("127.0.0.1", "63x9")),
        ),
        (
            "port 70000",
            Act::Reply(addr_reply("127.0.0.1", "70000")),
            Act::Reply(named("127.0.0.1", "70000")),
        ),
        (
            "a host with spaces",
            Act::Reply(addr_reply("127.0.0.1 -x", "6379")),
            Act::Reply(named("127.0.0.1 -x", "6379")),
        ),
        (
            "a replica's address",
            Act::Reply(addr_reply("127.0.0.1", &rport)),
            Act::Reply(named("127.0.0.1", &rport)),
        ),
        ("no answer", Act::Hang, Act::Hang),
        (
            "a huge reply",
            Act::Flood {
                head: b"*2\r\n$268435456\r\n".to_vec(),
                filler: b"x".to_vec(),
                total: 1 << 28,
            },
            Act::Flood {
                head: b"*1\r\n*2\r\n$268435456\r\n".to_vec(),
                filler: b"x".to_vec(),
                total: 1 << 28,
            },
        ),
    ];
    for (what, by_name, masters) in cases {
        eprintln!("sentinel case: {what}");
        let bad = RespProxy::start(([127, 0, 0, 1], sentinel.port).into()).await;
        bad.rule(move |c| {
            if c.name() != "SENTINEL" {
                return None;
            }
            match c.arg(1).to_ascii_uppercase().as_str() {
                "GET-MASTER-ADDR-BY-NAME" => Some(by_name.clone()),
                "MASTERS" | "MASTER" => Some(masters.clone()),
                _ => None,
            }
        });
        let gw = GatewayBuilder::new(&upstream)
            .sentinel(sentinel.port, MASTER)
            .configure(|c| {
                c.store.sentinels =
                    vec![bad.addr.to_string(), format!("127.0.0.1:{}", sentinel.port)];
                c.store.cache_entries = 0;
            })
            .store_timeout(STORE_TIMEOUT)
            .start()
            .await;
        let started = Instant::now();
        gw.wait_ready(Duration::from_secs(20)).await;
        eprintln!("{what}: ready in {:?}", started.elapsed());
        let mut b = Browser::new(&gw);
        b.login_alice().await;
        // Requests for a few seconds: the link re-checks the master with
        // the Sentinels in turn each second.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let r = b.get("/api/a").await;
            assert_eq!(r.status, StatusCode::OK, "{what}: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let asked: Vec<String> = bad
            .seen()
            .iter()
            .filter(|c| c.name() == "SENTINEL")
            .map(|c| c.arg(1).to_ascii_uppercase())
            .collect();
        assert!(
            asked.iter().any(|a| a == "MASTERS" || a == "MASTER")
                && asked.iter().any(|a| a == "GET-MASTER-ADDR-BY-NAME"),
            "{what}: the bad Sentinel was asked both ways: {asked:?}"
        );
        // The session was written to the master, never the replica.
        let (_, keys) = session_records(&master.url(), &gw.prefix).await;
        assert_eq!(keys.len(), 1, "{what}: the session is on the master");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_invalidation_messages_empty_the_session_cache_and_never_leave_it_stale() {
    use crate::session_cache::{cached_on, metric, tracking_up};
    const FLUSHES: &str = "oidc_bff_session_cache_flushes_total";
    let redis = RedisServer::start();
    let proxy = RespProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .redis(&proxy.url())
        .metrics()
        .start_process()
        .await;
    tracking_up(&gw).await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let cookie = b.cookie_header();
    for (what, frame) in [
        (
            "a key that is not a string",
            &b">2\r\n$10\r\ninvalidate\r\n*1\r\n:5\r\n"[..],
        ),
        (
            "a key under another prefix",
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$13\r\nother:s:abcd1\r\n",
        ),
        (
            "keys that are no array",
            b">2\r\n$10\r\ninvalidate\r\n:1\r\n",
        ),
        ("no keys at all", b">1\r\n$10\r\ninvalidate\r\n"),
        ("a push whose kind is no string", b">2\r\n:5\r\n:6\r\n"),
    ] {
        tracking_up(&gw).await;
        cached_on(&gw, &cookie).await;
        let before = metric(&gw, FLUSHES).await;
        proxy.push_all(frame).await;
        let started = Instant::now();
        while metric(&gw, FLUSHES).await <= before {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: the cache was not emptied"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = b.get("/api/a").await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {r:?}");
    }
    // Ended behind the gateway's back while the cache serves again: the
    // invalidation still comes through.
    tracking_up(&gw).await;
    cached_on(&gw, &cookie).await;
    let (mut direct, keys) = session_records(&redis.url(), &gw.prefix).await;
    let _: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut direct)
        .await
        .expect("DEL");
    let started = Instant::now();
    loop {
        let r = b.get("/api/a").await;
        if r.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the deleted session was served from the cache: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_whose_cursor_never_comes_back_to_zero_ends_the_walk_instead_of_calling_forever() {
    let redis = RedisServer::start();
    let proxy = RespProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let upstream = Upstream::start().await;
    // The session count's walk (a SCAN batch per script call) answered
    // with the same cursor every time: a store or proxy that mangles
    // cursors.
    proxy.rule(|c| {
        (c.name() == "EVAL" && c.arg(1).contains("'SCAN'"))
            .then(|| Act::Reply(b"*2\r\n$1\r\n7\r\n:0\r\n".to_vec()))
    });
    let calls = |proxy: &RespProxy| {
        proxy
            .seen()
            .iter()
            .filter(|c| c.name() == "EVAL" && c.arg(1).contains("'SCAN'"))
            .count()
    };
    // The count runs at start, then every 30 s.
    let gw = gateway(&upstream, &proxy).await;
    let started = Instant::now();
    while calls(&proxy) == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "no count ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = calls(&proxy);
    assert!(
        n <= 3,
        "the walk stopped at the cursor answered twice, not after {n} calls"
    );
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_logout_the_store_answers_badly_fails_and_the_same_token_ends_the_session_later()
 {
    use crate::session_lifecycle::{backchannel_gateway_from, logout_token, post_logout_token};
    let redis = RedisServer::start();
    let proxy = RespProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let upstream = Upstream::start().await;
    let (gw, client_id) = backchannel_gateway_from(
        GatewayBuilder::new(&upstream)
            .redis(&proxy.url())
            .store_timeout(STORE_TIMEOUT)
            .configure(|c| c.store.cache_entries = 0),
    )
    .await;
    let user = crate::harness::unique_user("bcl-replies");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let sid = b.provider_sid().await;
    let token = logout_token(&client_id, serde_json::json!({ "sid": sid })).await;
    for (what, reply) in [
        (
            "a code REVOKE never answers",
            &b"*2\r\n:7\r\n$0\r\n\r\n"[..],
        ),
        ("+OK", b"+OK\r\n"),
        (
            "-OOM",
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
        ),
    ] {
        let reply = reply.to_vec();
        proxy.rule(move |c| {
            c.runs_script_with(REVOKE_SCRIPT)
                .then(|| Act::Reply(reply.clone()))
        });
        let (status, body) = post_logout_token(&gw, &token).await;
        assert!(
            status.is_server_error(),
            "{what}: the provider is told to try again: {status} {body}"
        );
        proxy.clear();
        assert_eq!(
            b.get("/api/a").await.status,
            StatusCode::OK,
            "{what}: not ended, and not said to be"
        );
    }
    let (status, body) = post_logout_token(&gw, &token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the retried token is no replay: {body}"
    );
    assert_eq!(b.get("/api/a").await.status, StatusCode::UNAUTHORIZED);
}

/// A connection to the Redis at `url`, and the session record keys under
/// `prefix` there.
async fn session_records(
    url: &str,
    prefix: &str,
) -> (redis::aio::MultiplexedConnection, Vec<String>) {
    let mut direct = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}s:*"))
        .query_async(&mut direct)
        .await
        .expect("KEYS");
    (direct, keys)
}
