//! Unit tests of the session layer over the memory store: what a cookie
//! opens, deadlines, and what tampering with a stored record does.

use super::*;
use hmac::Mac;
use http::{HeaderMap, HeaderValue};

use super::cookie::SessionId;
use super::crypto::{open, seal};
use super::record::StoredSession;
use super::sealing::aad;
use super::store::{NewSession, Revocation, RevokeReason, SessionStore};
use crate::config::ServerKeyConfig;
use crate::secret::SecretKey;
use crate::secret::SecretString;
use crate::session::store::memory::MemoryStore;
use std::time::Duration;

fn sessions(store: Arc<Store>) -> Sessions {
    Sessions::new(
        &SessionConfig {
            idle_timeout: Duration::from_secs(600),
            absolute_timeout: Duration::from_secs(3600),
            ..SessionConfig::with_keys(vec![ServerKeyConfig {
                id: "k1".into(),
                key: SecretKey::from_bytes([3; 32]),
            }])
        },
        store,
    )
}

fn login(sub: &str) -> NewLogin {
    NewLogin {
        sub: sub.into(),
        sid: Some("idp-sid".into()),
        access_token: SecretString::new("access-token-value"),
        refresh_token: Some(SecretString::new("refresh-token-value")),
        id_token: None,
        access_expires_at: 2_000,
        claims_json: r#"{"sub":"alice","name":"Alice"}"#.into(),
        scopes: None,
        dpop_key: None,
    }
}

fn cookie_header(set_cookie: &HeaderValue) -> HeaderMap {
    let pair = set_cookie
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&pair).expect("value"),
    );
    h
}

/// Alice's session, made at 1 000 and loaded (active) at `at`: its store
/// ID, the request headers carrying its cookie, and the session.
/// Alice's session, made at 1 000: its store ID and request headers
/// carrying its cookie.
async fn made_alice(s: &Sessions) -> (StoreId, HeaderMap) {
    let (sid, cookie) = s
        .create(login("alice"), &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    (sid, cookie_header(&cookie))
}

async fn active_alice(s: &Sessions, at: u64) -> (StoreId, HeaderMap, Arc<Session>) {
    let (sid, h) = made_alice(s).await;
    let Ok(Lookup::Active(session)) = s.load(&h, at).await else {
        panic!("active")
    };
    (sid, h, session)
}

#[tokio::test]
async fn a_created_session_loads_from_its_cookie_and_nothing_else() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, cookie) = s
        .create(login("alice"), &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    let Lookup::Active(session) = s.load(&cookie_header(&cookie), 1_001).await.expect("load")
    else {
        panic!("expected an active session");
    };
    assert_eq!(session.store_id, sid);
    assert_eq!(session.secrets.access_token.expose(), "access-token-value");
    assert_eq!(session.claims().expect("claims")["name"], "Alice");

    // The stored bytes hold neither the tokens nor the claims in clear.
    let raw = store
        .get(&sid)
        .await
        .expect("get")
        .into_live()
        .expect("present");
    let text = String::from_utf8_lossy(&raw);
    for needle in [
        "access-token-value",
        "refresh-token-value",
        "Alice",
        "alice",
        "idp-sid",
    ] {
        assert!(!text.contains(needle), "{needle} stored in clear");
    }
    assert!(matches!(
        s.load(&HeaderMap::new(), 1_001).await,
        Ok(Lookup::Anonymous)
    ));
}

#[tokio::test]
async fn sessions_end_at_their_idle_and_absolute_deadlines() {
    let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
    let (_, cookie) = s
        .create(login("alice"), &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    let h = cookie_header(&cookie);
    assert!(matches!(s.load(&h, 1_599).await, Ok(Lookup::Active(_))));
    assert!(
        matches!(s.load(&h, 1_600).await, Ok(Lookup::Ended(_))),
        "idle deadline"
    );
}

#[tokio::test]
async fn the_bearer_header_is_made_once_per_opened_session_and_a_refresh_gets_its_own() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store);
    let (_, cookie) = s
        .create(login("alice"), &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    let Ok(Lookup::Active(session)) = s.load(&cookie_header(&cookie), 1_001).await else {
        panic!("the session opens");
    };
    let first = session.bearer_header().expect("header");
    let again = session.bearer_header().expect("header");
    let expected = format!("Bearer {}", session.secrets.access_token.expose());
    assert_eq!(first.as_bytes(), expected.as_bytes());
    assert!(
        first.is_sensitive(),
        "never printed by a header map's Debug"
    );
    assert_eq!(
        first.as_bytes().as_ptr(),
        again.as_bytes().as_ptr(),
        "the second request shares the first one's header"
    );
    let mut secrets = session.secrets.clone();
    secrets.access_token = SecretString::new("a-refreshed-access-token");
    let refreshed = s
        .write_tokens(&session, secrets, 5_000, 1_002)
        .await
        .expect("write")
        .expect("live");
    assert_eq!(
        refreshed.bearer_header().expect("header").as_bytes(),
        b"Bearer a-refreshed-access-token",
        "the refreshed session never reuses the old token's header"
    );
}

#[tokio::test]
async fn touching_slides_the_idle_deadline_but_never_past_the_absolute_one() {
    let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
    let (_, cookie) = s
        .create(login("alice"), &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    let h = cookie_header(&cookie);
    let Ok(Lookup::Active(session)) = s.load(&h, 1_500).await else {
        panic!("active")
    };
    assert!(s.touch_due(&session, 1_500));
    assert!(
        s.touch(&session, &ClientInfo::default(), 1_500)
            .await
            .expect("touch")
    );
    // Past the record's own idle deadline (1 600), within the effective one.
    let Ok(Lookup::Active(touched)) = s.load(&h, 2_000).await else {
        panic!("active past the record's idle deadline")
    };
    assert_eq!(touched.stored.body.last_active_at, 1_500);
    assert_eq!(touched.stored.body.idle_expires_at, 2_100);
    assert!(!s.touch_due(&touched, 1_500));
    // A stale copy's touch never moves the activity back.
    assert!(
        s.touch(&session, &ClientInfo::default(), 1_400)
            .await
            .expect("touch")
    );
    assert!(matches!(s.load(&h, 2_050).await, Ok(Lookup::Active(_))));
    assert!(
        matches!(s.load(&h, 2_100).await, Ok(Lookup::Ended(_))),
        "idle deadline"
    );
    assert!(
        matches!(s.load(&h, 4_600).await, Ok(Lookup::Ended(_))),
        "absolute deadline"
    );
}

/// The generation of the record stored for `id` (bumped by every record
/// write, never by an activity write).
async fn stored_generation(store: &Store, id: &StoreId) -> u64 {
    let bytes = store.get(id).await.expect("get").into_live().expect("live");
    StoredSession::decode(&bytes)
        .expect("decodes")
        .record
        .generation
}

/// Idle timeout 600 s: the record's key lives until its idle deadline plus
/// 600 s. The memory store's clock is tokio's, paused here and advanced
/// with the times passed as `now`.
#[tokio::test(start_paused = true)]
async fn a_touch_writes_only_the_activity_until_the_record_would_not_outlive_it() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h) = made_alice(&s).await;
    let at = |now: u64| {
        let s = &s;
        let h = &h;
        async move {
            let Ok(Lookup::Active(session)) = s.load(h, now).await else {
                panic!("active at {now}")
            };
            assert!(
                s.touch(&session, &ClientInfo::default(), now)
                    .await
                    .expect("touch")
            );
        }
    };
    // Record: idle deadline 1 600, key until 2 200 (tokio time 1 200 s).
    at(1_100).await;
    tokio::time::advance(Duration::from_secs(400)).await;
    at(1_500).await; // 700 s left ≥ 600: activity only
    assert_eq!(stored_generation(&store, &sid).await, 1);
    tokio::time::advance(Duration::from_secs(200)).await;
    at(1_700).await; // 600 s left, the new deadline 600 s away: activity only
    assert_eq!(stored_generation(&store, &sid).await, 1);
    tokio::time::advance(Duration::from_secs(50)).await;
    at(1_750).await; // 550 s left < 600: the record (idle deadline 2 350)
    assert_eq!(stored_generation(&store, &sid).await, 2);
    tokio::time::advance(Duration::from_secs(50)).await;
    at(1_800).await;
    assert_eq!(stored_generation(&store, &sid).await, 2);
    // A new client IP is in the sealed metadata: the record is rewritten.
    let Ok(Lookup::Active(session)) = s.load(&h, 1_900).await else {
        panic!("active")
    };
    let moved = ClientInfo {
        ip: Some("192.0.2.7".parse().expect("ip")),
        user_agent: None,
    };
    assert!(s.touch(&session, &moved, 1_900).await.expect("touch"));
    assert_eq!(stored_generation(&store, &sid).await, 3);
}

#[test]
fn a_touch_rewrites_the_record_when_it_must_and_writes_only_the_activity_otherwise() {
    use crate::config::RecordLayout::{Compact, Previous};
    // (layout, client IP changed, sealed under a retired key) → touch.
    let cases = [
        ((Compact, false, false), Touch::Activity),
        ((Compact, true, false), Touch::Record),
        ((Compact, false, true), Touch::Record),
        // Versions that read only the record may still run.
        ((Previous, false, false), Touch::Record),
        ((Previous, true, true), Touch::Record),
    ];
    for ((layout, ip, rekey), want) in cases {
        assert_eq!(
            Touch::plan(layout, ip, rekey),
            want,
            "{layout:?} {ip} {rekey}"
        );
    }
}

#[tokio::test]
async fn with_the_previous_record_layout_every_touch_rewrites_the_record() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone()).with_record_layout(RecordLayout::Previous);
    let (sid, _, session) = active_alice(&s, 1_100).await;
    assert!(
        s.touch(&session, &ClientInfo::default(), 1_100)
            .await
            .expect("touch")
    );
    assert_eq!(stored_generation(&store, &sid).await, 2);
    let read = store.read(&sid).await.expect("read");
    assert_eq!(read.activity, None, "no activity recorded apart");
}

#[tokio::test]
async fn an_activity_stamp_edited_in_the_store_is_ignored() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h) = made_alice(&s).await;
    // Someone with write access to the store claims activity at 1 500
    // without the server key: the session still ends at 1 600.
    let forged = (1_500u64 << 31) | 12_345;
    assert!(
        store
            .record_activity(&sid, forged, 100_000)
            .await
            .expect("write")
    );
    assert!(matches!(s.load(&h, 1_550).await, Ok(Lookup::Active(_))));
    assert!(matches!(s.load(&h, 1_600).await, Ok(Lookup::Ended(_))));
}

#[tokio::test]
async fn a_cookie_with_the_right_id_but_another_secret_does_not_open() {
    let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
    let (_, cookie) = s
        .create(login("alice"), &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    let value = cookie
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .split_once('=')
        .expect("=")
        .1
        .to_owned();
    // Same lookup half, different secret half.
    let forged = format!("{}{}", &value[..22], "A".repeat(21));
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("__Host-oidc-bff={forged}")).expect("v"),
    );
    assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
}

/// A session created at 1_000 for alice, its cookie header and the
/// stored bytes.
async fn created(store: &Arc<Store>, s: &Sessions) -> (StoreId, HeaderMap, Vec<u8>) {
    created_from(store, s, login("alice")).await
}

/// [`created`] from the given login.
async fn created_from(
    store: &Arc<Store>,
    s: &Sessions,
    new: NewLogin,
) -> (StoreId, HeaderMap, Vec<u8>) {
    let (sid, cookie) = s
        .create(new, &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    let raw = store
        .get(&sid)
        .await
        .expect("get")
        .into_live()
        .expect("present");
    (sid, cookie_header(&cookie), raw)
}

/// Writes `bytes` as the session's record, as someone with write access
/// to the store could.
async fn overwrite(store: &Store, sid: &StoreId, old: &[u8], bytes: &[u8]) {
    let generation = StoredSession::decode(old)
        .expect("decodes")
        .record
        .generation;
    assert!(
        store
            .replace_if(sid, generation, bytes, 3_600_000)
            .await
            .expect("replace")
    );
}

fn edited(raw: &[u8], edit: impl FnOnce(&mut StoredSession)) -> Vec<u8> {
    let tagged = StoredSession::decode(raw).expect("decodes");
    let mut record = tagged.record;
    edit(&mut record);
    let tag: [u8; record::TAG_LEN] = tagged.tag.try_into().expect("tag");
    // The edited header keeps the old tag: no server key needed.
    record.encode(|_| tag)
}

#[tokio::test]
async fn a_stored_deadline_moved_later_makes_the_record_not_open() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h, raw) = created(&store, &s).await;
    let later = edited(&raw, |r| {
        r.body.idle_expires_at += 1;
        r.body.absolute_expires_at += 1;
    });
    overwrite(&store, &sid, &raw, &later).await;
    assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
}

#[tokio::test]
async fn any_one_byte_of_a_stored_record_changed_makes_it_not_open() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h, raw) = created(&store, &s).await;
    let Ok(Lookup::Active(session)) = s.load(&h, 1_001).await else {
        panic!("the untouched record opens");
    };
    for i in 0..raw.len() {
        let mut bytes = raw.clone();
        bytes[i] ^= 0x01;
        assert!(
            s.open(session.id.clone(), sid.clone(), &bytes, 1_001)
                .is_none(),
            "byte {i} changed and the record still opens"
        );
    }
}

#[tokio::test]
async fn a_rewritten_generation_makes_the_record_not_open() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h, raw) = created(&store, &s).await;
    let mut bytes = raw.clone();
    bytes[record::GENERATION_AT].copy_from_slice(&StoredSession::generation_bytes(99));
    overwrite(&store, &sid, &raw, &bytes).await;
    assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
}

#[tokio::test]
async fn a_record_copied_under_another_session_does_not_open() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (a, ha, raw_a) = created(&store, &s).await;
    let (_, _, raw_b) = created(&store, &s).await;
    overwrite(&store, &a, &raw_a, &raw_b).await;
    assert!(matches!(s.load(&ha, 1_001).await, Ok(Lookup::Ended(_))));
}

#[tokio::test]
async fn a_revoked_record_written_back_stays_ended() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h, raw) = created(&store, &s).await;
    s.revoke(&sid, RevokeReason::Logout, "user", 1_001)
        .await
        .expect("revoke");
    // Restore the saved bytes and the index entries, as a backup would.
    store
        .create(&NewSession {
            id: &sid,
            record: &raw,
            ttl_millis: 3_600_000,
            user_hash: &user_hash("alice"),
            sid_hash: None,
            created_millis: 1_000_000,
            max_per_user: None,
            eviction: &Revocation::new(RevokeReason::Limit, "system", 1_001),
            index_ttl_millis: 3_600_000,
        })
        .await
        .expect("restore");
    assert!(matches!(s.load(&h, 1_002).await, Ok(Lookup::Ended(_))));
    assert!(!s.belongs_to(&sid, "alice", 1_002).await.expect("owner"));
}

#[tokio::test]
async fn deadlines_beyond_the_configured_lifetimes_do_not_open_even_when_signed() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h, raw) = created(&store, &s).await;
    let record = StoredSession::decode(&raw).expect("decodes").record;
    type Edit = fn(&mut StoredSession);
    let cases: [(&str, Edit); 4] = [
        ("absolute", |r| {
            r.body.absolute_expires_at = r.body.created_at + 3_601
        }),
        ("idle", |r| {
            r.body.idle_expires_at = r.body.last_active_at + 601
        }),
        ("created in the future", |r| {
            r.body.created_at = 5_000;
            r.body.last_active_at = 5_000;
        }),
        ("active before created", |r| r.body.last_active_at = 999),
    ];
    let mut current = raw.clone();
    for (what, edit) in cases {
        let mut r = record.clone();
        edit(&mut r);
        // Signed with the server key: as if written under another
        // configuration, not merely tampered with.
        let bytes = s.encode(&sid, &r);
        overwrite(&store, &sid, &current, &bytes).await;
        current = bytes;
        assert!(
            matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))),
            "{what}: opened"
        );
    }
    // The same record within the rules opens again.
    let bytes = s.encode(&sid, &record);
    overwrite(&store, &sid, &current, &bytes).await;
    assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Active(_))));
}

#[tokio::test]
async fn a_record_in_the_untagged_format_1_is_ended_not_a_crash() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, h, raw) = created(&store, &s).await;
    let mut old = raw[..raw.len() - record::TAG_LEN].to_vec();
    old[0] = 1;
    overwrite(&store, &sid, &raw, &old).await;
    assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
}

#[tokio::test]
async fn records_under_an_older_configured_key_open_and_are_resealed_on_write() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let old = sessions(store.clone());
    let (sid, h, _) = created(&store, &old).await;
    let key = |id: &str, b: u8| ServerKeyConfig {
        id: id.into(),
        key: SecretKey::from_bytes([b; 32]),
    };
    let config = |keys| SessionConfig {
        idle_timeout: Duration::from_secs(600),
        absolute_timeout: Duration::from_secs(3600),
        ..SessionConfig::with_keys(keys)
    };
    let rotated = Sessions::new(&config(vec![key("k2", 4), key("k1", 3)]), store.clone());
    let Ok(Lookup::Active(session)) = rotated.load(&h, 1_100).await else {
        panic!("a record under the older key opens");
    };
    assert!(
        rotated
            .touch(&session, &ClientInfo::default(), 1_100)
            .await
            .expect("touch")
    );
    let raw = store
        .get(&sid)
        .await
        .expect("get")
        .into_live()
        .expect("present");
    assert_eq!(
        StoredSession::decode(&raw)
            .expect("decodes")
            .record
            .body
            .key_id,
        "k2"
    );
    let only_new = Sessions::new(&config(vec![key("k2", 4)]), store.clone());
    assert!(matches!(
        only_new.load(&h, 1_101).await,
        Ok(Lookup::Active(_))
    ));
    assert!(
        only_new
            .belongs_to(&sid, "alice", 1_101)
            .await
            .expect("owner")
    );
    assert!(
        !only_new
            .belongs_to(&sid, "bob", 1_101)
            .await
            .expect("owner")
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]
    #[test]
    fn arbitrary_bytes_as_a_stored_record_never_panic_and_never_open(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        version in 0u8..3,
    ) {
        let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
        let mut bytes = bytes;
        if version > 0 && !bytes.is_empty() {
            // The packed format and the one before it.
            bytes[0] = [record::FORMAT_VERSION, record::FORMAT_TEXT][usize::from(version - 1)];
        }
        let id = SessionId::generate([3, 4]);
        let store_id = id.store_id();
        proptest::prop_assert!(s.open(id, store_id.clone(), &bytes, 1_000).is_none());
        proptest::prop_assert!(s.verify(&store_id, &bytes, 1_000).is_none());
    }
}

/// A JWT-shaped token of about `len` characters (base64url segments).
fn jwt_like(len: usize) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let payload: Vec<u8> = (0..len * 3 / 4).map(|i| b'a' + (i % 26) as u8).collect();
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","kid":"k"}"#),
        b64(&payload),
        b64(&[9; 64])
    )
}

#[tokio::test]
async fn a_session_stored_in_format_2_before_packing_still_opens_and_is_rewritten_packed() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (access, id_token) = (jwt_like(900), jwt_like(700));
    let (sid, h, raw) = created_from(
        &store,
        &s,
        NewLogin {
            access_token: SecretString::new(access.clone()),
            id_token: Some(SecretString::new(id_token.clone())),
            ..login("alice")
        },
    )
    .await;
    assert_eq!(raw[0], record::FORMAT_VERSION);
    let Ok(Lookup::Active(session)) = s.load(&h, 1_001).await else {
        panic!("a new session opens");
    };
    // The same session as the previous version wrote it: format 2, hex
    // hashes, secrets with tokens as text, tagged under the same key.
    let mut old = StoredSession::decode(&raw).expect("decodes").record;
    let cipher = s.keys.current().session_cipher(session.id.secret());
    old.body.secrets = seal(
        &cipher,
        &aad(&sid, "secrets"),
        &record::format_text::encode_secrets(&session.secrets),
    );
    let key = s.keys.current();
    let sign = |signed: &[u8]| -> [u8; record::TAG_LEN] {
        let mut mac = key.record_mac(sid.as_str());
        mac.update(signed);
        mac.finalize().into_bytes().into()
    };
    let format_2 = record::format_text::encode_record(&old, sign);
    assert_eq!(format_2[0], 2);
    assert!(
        format_2.len() > raw.len() + 400,
        "packing saves a quarter of the tokens: {} vs {}",
        format_2.len(),
        raw.len()
    );
    overwrite(&store, &sid, &raw, &format_2).await;
    let Ok(Lookup::Active(loaded)) = s.load(&h, 1_002).await else {
        panic!("a format-2 record opens");
    };
    assert_eq!(loaded.secrets.access_token.expose(), access);
    assert_eq!(
        loaded.secrets.id_token.as_ref().map(|t| t.expose()),
        Some(id_token.as_str())
    );
    assert_eq!(loaded.stored.body.user_hash, user_hash("alice"));
    assert_eq!(loaded.stored.body.sid_hash, Some(sid_hash("idp-sid")));
    // Tampering with a format-2 record is refused as before.
    for i in [0, 5, format_2.len() / 2, format_2.len() - 1] {
        let mut bytes = format_2.clone();
        bytes[i] ^= 0x01;
        assert!(
            s.open(loaded.id.clone(), sid.clone(), &bytes, 1_002)
                .is_none(),
            "byte {i}"
        );
    }
    // Its next record write is packed, and still opens (a new client IP:
    // a touch that must rewrite the record).
    let moved = ClientInfo {
        ip: Some("192.0.2.7".parse().expect("ip")),
        user_agent: None,
    };
    assert!(s.touch(&loaded, &moved, 1_100).await.expect("touch"));
    let rewritten = store
        .get(&sid)
        .await
        .expect("get")
        .into_live()
        .expect("live");
    assert_eq!(rewritten[0], record::FORMAT_VERSION);
    let Ok(Lookup::Active(again)) = s.load(&h, 1_101).await else {
        panic!("the rewritten record opens");
    };
    assert_eq!(again.secrets.access_token.expose(), access);
}

#[tokio::test]
async fn an_opened_sessions_dpop_key_is_parsed_once_and_is_the_sealed_one() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store);
    let pkcs8 = crate::oidc::dpop::DpopKey::generate().expect("key");
    let sealed = crate::oidc::dpop::DpopKey::from_pkcs8(&pkcs8).expect("loads");
    let (_, cookie) = s
        .create(
            NewLogin {
                dpop_key: Some(pkcs8),
                ..login("alice")
            },
            &ClientInfo::default(),
            1_000,
        )
        .await
        .expect("create");
    let Ok(Lookup::Active(session)) = s.load(&cookie_header(&cookie), 1_001).await else {
        panic!("expected an active session");
    };
    assert!(session.dpop.get().is_none(), "not parsed before it is used");
    let first = session.dpop().expect("parses").expect("has a key");
    assert_eq!(first.thumbprint(), sealed.thumbprint());
    let again = session.dpop().expect("parses").expect("has a key");
    assert!(std::ptr::eq(first, again), "parsed once, then reused");

    let (_, cookie) = s
        .create(login("bob"), &ClientInfo::default(), 1_000)
        .await
        .expect("create");
    let Ok(Lookup::Active(keyless)) = s.load(&cookie_header(&cookie), 1_001).await else {
        panic!("expected an active session");
    };
    assert!(keyless.dpop().expect("no key is no error").is_none());
}

/// A compact JWS with `payload` (not checked here: the flows validate).
fn id_token_with(payload: &str) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","kid":"k"}"#),
        b64(payload.as_bytes()),
        b64(&[7; 256])
    )
}

/// The sealed secrets of the record stored for `sid`, opened.
async fn stored_secrets(s: &Sessions, store: &Store, sid: &StoreId, id: &SessionId) -> Vec<u8> {
    let raw = store
        .get(sid)
        .await
        .expect("get")
        .into_live()
        .expect("live");
    let record = StoredSession::decode(&raw).expect("decodes").record;
    let cipher = s.keys.current().session_cipher(id.secret());
    open(&cipher, &aad(sid, "secrets"), &record.body.secrets)
        .expect("opens")
        .to_vec()
}

#[tokio::test]
async fn a_format_3_session_with_its_claims_stored_twice_opens_and_its_next_token_write_keeps_them_once()
 {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let payload = r#"{"iss":"https://op.test","aud":"bff","exp":1700000600,"iat":1700000000,"nonce":"n0","at_hash":"x","sub":"alice","sid":"idp-sid","auth_time":1700000000,"name":"Alice Liddell","email":"alice@example.com","groups":["staff","dev"]}"#;
    let claims_json = r#"{"auth_time":1700000000,"email":"alice@example.com","groups":["staff","dev"],"name":"Alice Liddell","sid":"idp-sid","sub":"alice"}"#;
    let (sid, h, raw) = created_from(
        &store,
        &s,
        NewLogin {
            id_token: Some(SecretString::new(id_token_with(payload))),
            claims_json: claims_json.into(),
            ..login("alice")
        },
    )
    .await;
    let Ok(Lookup::Active(session)) = s.load(&h, 1_001).await else {
        panic!("a new session opens");
    };
    assert_eq!(session.secrets.claims_json().expect("claims"), claims_json);
    let once = stored_secrets(&s, &store, &sid, &session.id).await;
    assert!(once.starts_with(&record::CLAIMS_ONCE_SECRETS));
    // The same session as format 3 sealed it before: claims as text.
    let mut old = StoredSession::decode(&raw).expect("decodes").record;
    let cipher = s.keys.current().session_cipher(session.id.secret());
    old.body.secrets = seal(
        &cipher,
        &aad(&sid, "secrets"),
        &record::format_text::encode_packed_secrets(&session.secrets),
    );
    let twice = s.encode(&sid, &old);
    assert!(
        twice.len() >= raw.len() + claims_json.len() - 4,
        "the claims' text is what the new layout saves: {} vs {}",
        twice.len(),
        raw.len()
    );
    overwrite(&store, &sid, &raw, &twice).await;
    let Ok(Lookup::Active(loaded)) = s.load(&h, 1_002).await else {
        panic!("a record of the layout before opens");
    };
    assert_eq!(loaded.secrets.claims_json().expect("claims"), claims_json);
    assert_eq!(
        loaded.claims().expect("claims"),
        session.claims().expect("claims")
    );
    // Its next token write (a refresh without a new ID token) keeps the
    // claims once, and they open the same.
    let written = s
        .write_tokens(&loaded, loaded.secrets.clone(), 3_000, 1_003)
        .await
        .expect("write")
        .expect("live");
    let rewritten = stored_secrets(&s, &store, &sid, &written.id).await;
    assert!(rewritten.starts_with(&record::CLAIMS_ONCE_SECRETS));
    let Ok(Lookup::Active(again)) = s.load(&h, 1_004).await else {
        panic!("the rewritten record opens");
    };
    assert_eq!(again.secrets.claims_json().expect("claims"), claims_json);
    // A refresh with a new ID token: merged claims (the old `email`, which
    // the new payload lacks, stays) come back byte for byte.
    let new_payload =
        r#"{"iss":"https://op.test","sub":"alice","name":"Alice L.","iat":1700009000}"#;
    let merged = r#"{"auth_time":1700000000,"email":"alice@example.com","groups":["staff","dev"],"name":"Alice L.","sid":"idp-sid","sub":"alice"}"#;
    let mut refreshed = again.secrets.clone();
    refreshed.id_token = Some(SecretString::new(id_token_with(new_payload)));
    refreshed.claims = merged.into();
    s.write_tokens(&again, refreshed, 4_000, 1_005)
        .await
        .expect("write")
        .expect("live");
    let Ok(Lookup::Active(last)) = s.load(&h, 1_006).await else {
        panic!("the refreshed record opens");
    };
    assert_eq!(last.secrets.claims_json().expect("claims"), merged);
}

/// Sealed claims that do not rebuild (a corrupt record: never one this
/// code wrote and sealed) do not stop the session from opening — decoding
/// checks structure only — but every use of its claims refuses it as
/// ended (401 `session_expired`: `error.rs`), never answers with no
/// claims; and
/// `store.record_layout = "previous"` writes a session's secrets in the
/// layout the version before reads.
#[tokio::test]
async fn claims_that_do_not_rebuild_refuse_the_session_where_they_are_used() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone()).with_record_layout(crate::config::RecordLayout::Previous);
    let payload = r#"{"sub":"alice","name":"Alice Liddell","email":"alice@example.com"}"#;
    let (sid, h, _) = created_from(
        &store,
        &s,
        NewLogin {
            id_token: Some(SecretString::new(id_token_with(payload))),
            claims_json: r#"{"email":"alice@example.com","name":"Alice Liddell","sub":"alice"}"#
                .into(),
            ..login("alice")
        },
    )
    .await;
    let Ok(Lookup::Active(session)) = s.load(&h, 1_001).await else {
        panic!("a new session opens");
    };
    let previous = stored_secrets(&s, &store, &sid, &session.id).await;
    assert!(
        previous.starts_with(&record::PACKED_SECRETS),
        "the layout before"
    );
    assert_eq!(session.claims().expect("claims")["name"], "Alice Liddell");
    // The claims kept once, then the ID token they rebuild from taken away.
    let compact = session.secrets.encode();
    let mut broken = record::SessionSecrets::decode(&compact).expect("decodes");
    broken.id_token = None;
    let raw = store
        .get(&sid)
        .await
        .expect("get")
        .into_live()
        .expect("live");
    let mut record = StoredSession::decode(&raw).expect("decodes").record;
    let cipher = s.keys.current().session_cipher(session.id.secret());
    record.body.secrets = seal(&cipher, &aad(&sid, "secrets"), &broken.encode());
    let corrupt = s.encode(&sid, &record);
    overwrite(&store, &sid, &raw, &corrupt).await;
    let Ok(Lookup::Active(opened)) = s.load(&h, 1_002).await else {
        panic!("structurally sound: it opens");
    };
    assert_eq!(opened.secrets.access_token.expose(), "access-token-value");
    assert_eq!(opened.claims(), Err(ClaimsUnreadable));
    assert_eq!(opened.claims(), Err(ClaimsUnreadable), "at every use");
}

#[tokio::test]
async fn listings_and_ownership_checks_see_the_activity_recorded_apart() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let (sid, _, session) = active_alice(&s, 1_500).await;
    assert!(
        s.touch(&session, &ClientInfo::default(), 1_500)
            .await
            .expect("touch")
    );
    assert_eq!(stored_generation(&store, &sid).await, 1, "activity only");
    // Past the record's own idle deadline (1 600): still listed, with the
    // effective times.
    let page = s.list_user("alice", None, 10, 1_700).await.expect("list");
    let listed: Vec<_> = page
        .sessions
        .iter()
        .map(|i| (i.last_active_at, i.idle_expires_at, i.expires_at))
        .collect();
    assert_eq!(listed, [(1_500, 2_100, 2_100)]);
    assert!(s.belongs_to(&sid, "alice", 1_700).await.expect("owner"));
    assert!(!s.belongs_to(&sid, "alice", 2_100).await.expect("owner"));
    let page = s.list_user("alice", None, 10, 2_100).await.expect("list");
    assert!(page.sessions.is_empty(), "ended at its effective deadline");
}

mod idle_ended;
