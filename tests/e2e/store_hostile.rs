//! Store content that is not what the gateway wrote: every key it reads
//! holding another type (a string where a hash is expected, a list, a
//! stream), as another tenant of a shared Redis, or a restore from
//! elsewhere, can leave it. A session whose keys cannot be read is no
//! session (401, cookie cleared), never a 503 that looks like an outage
//! for as long as the key is there; an index of another type neither
//! blocks its user's next login nor stops a listing or the sweep.

use crate::harness::browser::Resp;
use crate::harness::*;
use http::{Method, StatusCode};

/// The one session record of a gateway after one login, and the rest of
/// its name after `P s:` (shard tag and ID), which the session's other
/// keys share.
async fn session_keys(gw: &Gateway) -> (String, String) {
    let record = gw
        .redis_keys()
        .await
        .into_iter()
        .find(|k| k.starts_with(&format!("{}s:", gw.prefix)))
        .expect("a session record");
    let rest = record[gw.prefix.len() + 2..].to_owned();
    (record, rest)
}

/// The one key of `kind` (`u`, `x`) a gateway holds.
async fn the_key(gw: &Gateway, kind: &str) -> String {
    gw.redis_keys()
        .await
        .into_iter()
        .find(|k| k.starts_with(&format!("{}{kind}:", gw.prefix)))
        .unwrap_or_else(|| panic!("a {kind}: key"))
}

/// Replaces `key` with a value of another type: `string`, `list`,
/// `hash` or `stream`.
async fn overwrite_as(gw: &Gateway, key: &str, kind: &str) {
    overwrite_in(&mut gw.redis().await, key, kind).await;
}

/// [`overwrite_as`] on a connection of the test's own.
async fn overwrite_in(conn: &mut redis::aio::MultiplexedConnection, key: &str, kind: &str) {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(key).ignore();
    match kind {
        "string" => pipe.cmd("SET").arg(key).arg("not ours"),
        "list" => pipe.cmd("RPUSH").arg(key).arg("not ours"),
        "hash" => pipe.cmd("HSET").arg(key).arg("r").arg("not ours"),
        "stream" => pipe.cmd("XADD").arg(key).arg("*").arg("r").arg("not ours"),
        other => panic!("no such kind {other}"),
    };
    let _: redis::Value = pipe.query_async(conn).await.expect("overwrite");
}

fn clears_the_session_cookie(r: &Resp) -> bool {
    r.set_cookies()
        .iter()
        .any(|c| c.starts_with("__Host-oidc-bff=;") && c.contains("Max-Age=0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_key_of_another_type_is_no_session_not_an_outage() {
    let upstream = Upstream::start().await;
    for kind in ["string", "list", "stream"] {
        let gw = GatewayBuilder::new(&upstream).start().await;
        let mut b = Browser::new(&gw);
        let user = unique_user("record-type");
        b.login_as(&user).await;
        assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
        let (record, _) = session_keys(&gw).await;
        overwrite_as(&gw, &record, kind).await;

        let api = b.get("/api/x").await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{kind}: {api:?}");
        assert_eq!(api.json()["error"], "session_expired", "{kind}: {api:?}");
        assert!(clears_the_session_cookie(&api), "{kind}: {api:?}");
        let user_info = b.get("/auth/user").await;
        assert_eq!(user_info.status, StatusCode::UNAUTHORIZED, "{kind}");
        let out = b
            .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
            .await;
        assert_eq!(out.status, StatusCode::OK, "{kind}: {out:?}");
        // The user logs in again and is served.
        let mut again = Browser::new(&gw);
        again.login_as(&user).await;
        assert_eq!(again.get("/api/x").await.status, StatusCode::OK, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_key_of_another_type_ends_the_session() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("tomb-type")).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let (_, rest) = session_keys(&gw).await;
    overwrite_as(&gw, &format!("{}t:{rest}", gw.prefix), "hash").await;

    let api = b.get("/api/x").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{api:?}");
    assert!(clears_the_session_cookie(&api), "{api:?}");
    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_of_another_type_blocks_neither_login_nor_listing_nor_the_sweep() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).admin().start().await;
    let user = unique_user("index-type");
    let mut first = Browser::new(&gw);
    first.login_as(&user).await;
    let index = the_key(&gw, "u").await;
    overwrite_as(&gw, &index, "string").await;

    // The sweep (run by the statistics) skips it rather than failing.
    let (status, stats) = gw.admin(Method::GET, "/admin/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    // The session itself is still served, and lists no one while its
    // index is not one.
    assert_eq!(first.get("/api/x").await.status, StatusCode::OK);
    let listing = first.get("/auth/sessions").await;
    assert_eq!(listing.status, StatusCode::OK, "{listing:?}");
    // Nor does revoking the user's sessions fail on it.
    let (status, out) = gw
        .admin(
            Method::POST,
            "/admin/sessions/revoke",
            Some(serde_json::json!({ "user": user })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    // The user's next login replaces the index.
    let mut second = Browser::new(&gw);
    second.login_as(&user).await;
    assert_eq!(second.get("/api/x").await.status, StatusCode::OK);
    let listing = second.get("/auth/sessions").await;
    assert_eq!(listing.status, StatusCode::OK, "{listing:?}");
    assert!(
        !listing.json()["sessions"]
            .as_array()
            .expect("a list")
            .is_empty(),
        "{listing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_session_index_of_another_type_does_not_block_the_next_login() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let user = unique_user("sid-type");
    b.login_as(&user).await;
    let index = the_key(&gw, "x").await;
    overwrite_as(&gw, &index, "string").await;
    // The same browser logs in again: the same provider session, so the
    // same index.
    b.login_as(&user).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
}

async fn shared_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(shared().redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// The refresh lock, the login claim, a logout token's jti marker and the
/// sweep's and count's leases are `SET NX` markers: Redis answers "already
/// set" for a key of any type there, so a key of another type held the
/// lock, the claim or the lease for as long as it was there (every refresh,
/// that login, every sweep refused). They are no markers of ours: replaced,
/// and then a marker like any other (the next taker is refused). A
/// single-use handle (fetch logout) of another type is an unknown handle,
/// and a published count of another type is none, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_locks_and_leases_of_another_type_are_replaced_not_held() {
    use oidc_bff::session::cookie::StoreId;
    use oidc_bff::session::store::{OnceKind, SessionStore};
    use std::time::Duration;
    let mut conn = shared_redis().await;
    let now = oidc_bff::clock::unix_now();
    for kind in ["list", "hash", "stream"] {
        let prefix = random_prefix();
        let store = crate::store_conformance::redis_store_at(&prefix);
        let rest = "0".repeat(56);
        let id = StoreId::parse(&format!("abcd{rest}")).expect("id");

        overwrite_in(&mut conn, &format!("{prefix}l:{{abcd}}{rest}"), kind).await;
        assert!(
            store.lock(&id, "mine", 10_000).await.expect("lock"),
            "{kind}"
        );
        assert!(
            !store.lock(&id, "theirs", 10_000).await.expect("lock"),
            "{kind}"
        );
        store.unlock(&id, "mine").await.expect("unlock");
        assert!(
            store.lock(&id, "theirs", 10_000).await.expect("lock"),
            "{kind}"
        );

        overwrite_in(&mut conn, &format!("{prefix}c:claimed"), kind).await;
        assert!(
            store.claim_once("claimed", 10_000).await.expect("claim"),
            "{kind}"
        );
        assert!(
            !store.claim_once("claimed", 10_000).await.expect("claim"),
            "{kind}"
        );

        overwrite_in(&mut conn, &format!("{prefix}j:seen"), kind).await;
        assert!(
            store.remember_jti("seen", 10_000).await.expect("jti"),
            "{kind}"
        );
        assert!(
            !store.remember_jti("seen", 10_000).await.expect("jti"),
            "{kind}"
        );

        overwrite_in(&mut conn, &format!("{prefix}o:logout:handle"), kind).await;
        assert_eq!(
            store
                .take_once(OnceKind::Logout, "handle")
                .await
                .expect("take"),
            None,
            "{kind}"
        );

        let every = Duration::from_secs(60);
        overwrite_in(&mut conn, &format!("{prefix}sweep:lease"), kind).await;
        assert!(
            store
                .fleet_sweep(every, now)
                .await
                .expect("sweep")
                .is_some(),
            "{kind}: the sweep ran"
        );
        // Another process holds the count's lease; what it published is
        // not a count.
        overwrite_in(&mut conn, &format!("{prefix}count:lease"), "string").await;
        overwrite_in(&mut conn, &format!("{prefix}count:total"), kind).await;
        assert_eq!(
            store.fleet_count(every, now).await.expect("count"),
            None,
            "{kind}"
        );
        overwrite_in(&mut conn, &format!("{prefix}count:lease"), kind).await;
        assert_eq!(
            store.fleet_count(every, now).await.expect("count"),
            Some(0),
            "{kind}"
        );
    }
}

/// The shard tags' key is not replaced when it holds another type (a new
/// key would move every user's new sessions to other slots than their
/// existing ones): the store refuses with an error that names the key and
/// the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_key_of_another_type_is_a_precise_error_and_is_kept() {
    use oidc_bff::session::store::SessionStore;
    let mut conn = shared_redis().await;
    let prefix = random_prefix();
    let key = format!("{prefix}shard-key");
    overwrite_in(&mut conn, &key, "hash").await;
    let store = crate::store_conformance::redis_store_at(&prefix);
    let e = store.shard_of("some-user").await.expect_err("no shard tag");
    let told = e.to_string();
    assert!(told.contains(&format!("DEL {key}")), "{told}");
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("type");
    assert_eq!(kind, "hash", "left for the operator");
}
