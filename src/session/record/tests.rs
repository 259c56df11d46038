//! Unit tests of the record layouts: round trips, older formats and
//! layouts still read, strict decoding, garbage.

use super::*;

fn sample() -> StoredSession {
    StoredSession {
        generation: 7,
        body: StoredBody {
            key_id: "k1".into(),
            user_hash: "ab".repeat(32),
            sid_hash: Some("cd".repeat(32)),
            created_at: 1_000,
            last_active_at: 1_100,
            idle_expires_at: 4_700,
            absolute_expires_at: 44_200,
            access_expires_at: 1_400,
            has_refresh_token: true,
            meta: vec![1, 2, 3],
            secrets: vec![4; 300],
        },
    }
}

fn sign(_: &[u8]) -> [u8; TAG_LEN] {
    [0xAB; TAG_LEN]
}

#[test]
fn records_round_trip_with_the_generation_at_a_fixed_offset_and_the_tag_last() {
    let r = sample();
    let bytes = r.encode(sign);
    assert_eq!(bytes[0], FORMAT_VERSION);
    assert_eq!(&bytes[1..9], &StoredSession::generation_bytes(7));
    let tagged = StoredSession::decode(&bytes).expect("decodes");
    assert_eq!(tagged.record, r);
    assert_eq!(tagged.tag, &[0xAB; TAG_LEN][..]);
    assert_eq!(tagged.signed, &bytes[..bytes.len() - TAG_LEN]);
}

#[test]
fn the_tag_covers_every_byte_before_it() {
    let mut seen = Vec::new();
    let bytes = sample().encode(|b| {
        seen = b.to_vec();
        [0; TAG_LEN]
    });
    assert_eq!(seen, &bytes[..bytes.len() - TAG_LEN]);
}

#[test]
fn format_3_packs_the_hashes_and_format_2_records_still_decode() {
    let r = sample();
    let packed = r.encode(sign);
    let text = format_text::encode_record(&r, sign);
    assert_eq!(text[0], FORMAT_TEXT);
    assert_eq!(packed.len() + 2 * 32, text.len(), "two hashes as bytes");
    let back = StoredSession::decode(&text).expect("format 2 decodes");
    assert_eq!(back.record, r);
    assert_eq!(&text[GENERATION_AT], &StoredSession::generation_bytes(7));
    // Hashes that are not lower-case hex SHA-256 come back as they were.
    let mut odd = sample();
    odd.body.user_hash = "AB".repeat(32);
    odd.body.sid_hash = None;
    let bytes = odd.encode(sign);
    assert_eq!(StoredSession::decode(&bytes).expect("decodes").record, odd);
}

#[test]
fn secrets_of_format_2_decode_and_packed_ones_round_trip() {
    let s = SessionSecrets {
        access_token: SecretString::new("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.c2ln"),
        refresh_token: Some(SecretString::new("opaque-refresh")),
        id_token: Some(SecretString::new("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")),
        claims: "{\"sub\":\"a\"}".into(),
        scopes: Some("openid".into()),
        derived: vec![derived("k", "eyJ4IjoxfQ.eyJ5IjoyfQ.c2ln", 9)],
        dpop_key: None,
    };
    let packed = s.encode();
    assert_eq!(
        packed.capacity(),
        s.encoded_capacity(),
        "the buffer never grew (a grown one leaves an unwiped copy)"
    );
    let same = |b: SessionSecrets| {
        assert_eq!(b.access_token.expose(), s.access_token.expose());
        assert_eq!(
            b.refresh_token.as_ref().map(|t| t.expose()),
            Some("opaque-refresh")
        );
        assert_eq!(
            b.id_token.as_ref().map(|t| t.expose()),
            s.id_token.as_ref().map(|t| t.expose())
        );
        assert_eq!(
            b.claims_json().expect("claims"),
            s.claims_json().expect("claims")
        );
        assert_eq!(b.scopes, s.scopes);
        assert_eq!(
            b.derived_token("k", 0, 0).map(|t| t.expose()),
            Some("eyJ4IjoxfQ.eyJ5IjoyfQ.c2ln")
        );
    };
    let packed = s.encode();
    assert!(packed.starts_with(&CLAIMS_ONCE_SECRETS));
    same(SessionSecrets::decode(&packed).expect("packed"));
    // Format 3's layout before the claims were kept once.
    let claims_twice = format_text::encode_packed_secrets(&s);
    assert!(claims_twice.starts_with(&PACKED_SECRETS));
    assert_eq!(
        claims_twice.len(),
        packed.len() + s.claims_json().expect("claims").len() - 2,
        "the claims are the ID token's: a marker instead of the text"
    );
    same(SessionSecrets::decode(&claims_twice).expect("claims as text"));
    let text = format_text::encode_secrets(&s);
    assert!(!text.starts_with(&PACKED_SECRETS));
    assert!(text.len() > packed.len());
    same(SessionSecrets::decode(&text).expect("format 2"));
    // A packed body cut short is an error.
    assert_eq!(
        SessionSecrets::decode(&packed[..packed.len() - 3]).err(),
        Some(RecordError::Malformed)
    );
}

#[test]
fn records_of_the_untagged_format_1_are_refused_as_unknown() {
    let mut bytes = sample().encode(sign);
    bytes[0] = 1;
    assert_eq!(
        StoredSession::decode(&bytes).map(|t| t.record),
        Err(RecordError::UnknownVersion(1))
    );
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let decode = |b: &[u8]| StoredSession::decode(b).map(|t| t.record);
    assert_eq!(decode(b""), Err(RecordError::Truncated));
    assert_eq!(decode(&[4; 60]), Err(RecordError::UnknownVersion(4)));
    // A body cut short, or with a byte too many, before the tag.
    let full = sample().encode(sign);
    let (signed, tag) = full.split_at(full.len() - TAG_LEN);
    let short = [&signed[..signed.len() - 5], tag].concat();
    assert_eq!(decode(&short), Err(RecordError::Malformed));
    let long = [signed, &[0], tag].concat();
    assert_eq!(decode(&long), Err(RecordError::Malformed));
    // Every prefix and a sweep of random-ish inputs: no panic.
    for n in 0..full.len() {
        let _ = StoredSession::decode(&full[..n]);
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        let mut buf = vec![FORMAT_VERSION];
        for _ in 0..(x % 97) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push(x as u8);
        }
        let _ = StoredSession::decode(&buf);
        let _ = SessionSecrets::decode(&buf);
        let _ = SessionMeta::decode(&buf);
    }
}

#[test]
fn expiry_reports_which_limit_ended_the_session() {
    let b = sample().body;
    assert_eq!(b.expired(1_200), None);
    assert_eq!(b.expired(4_700), Some(Expiry::Idle));
    assert_eq!(b.expired(44_200), Some(Expiry::Absolute));
    assert_eq!(b.ends_at(), 4_700);
    assert_eq!(b.ttl_millis(4_600_000), 100_000);
    assert_eq!(b.ttl_millis(9_999_999), 1);
}

#[test]
fn secrets_debug_is_redacted() {
    let s = SessionSecrets {
        access_token: SecretString::new("at"),
        refresh_token: None,
        id_token: None,
        claims: "{}".into(),
        scopes: Some("openid api".into()),
        derived: Vec::new(),
        dpop_key: None,
    };
    assert_eq!(format!("{s:?}"), "SessionSecrets([redacted])");
    let back = SessionSecrets::decode(&s.encode()).expect("decodes");
    assert_eq!(back.access_token.expose(), "at");
    assert_eq!(back.scopes.as_deref(), Some("openid api"));
}

#[test]
fn secrets_written_before_scopes_were_kept_still_decode() {
    #[derive(Serialize)]
    struct Old<'a>(&'a str, Option<&'a str>, Option<&'a str>, &'a str);
    let old = postcard::to_stdvec(&Old("at", Some("rt"), None, "{\"sub\":\"a\"}")).expect("encode");
    let back = SessionSecrets::decode(&old).expect("decodes");
    assert_eq!(back.refresh_token.as_ref().map(|t| t.expose()), Some("rt"));
    assert_eq!(back.claims_json().expect("claims"), "{\"sub\":\"a\"}");
    assert_eq!(back.scopes, None);
}

fn derived(key: &str, token: &str, expires_at: u64) -> DerivedToken {
    DerivedToken {
        key: key.into(),
        access_token: SecretString::new(token),
        expires_at,
    }
}

#[test]
fn derived_tokens_are_kept_per_key_bounded_and_round_trip() {
    let mut s = SessionSecrets {
        access_token: SecretString::new("login"),
        refresh_token: Some(SecretString::new("rt")),
        id_token: None,
        claims: "{}".into(),
        scopes: None,
        derived: Vec::new(),
        dpop_key: None,
    };
    s.put_derived(derived("r|https://api-a.test/|", "for-a", 1_000));
    s.put_derived(derived("r|https://api-b.test/|", "for-b", 1_000));
    s.put_derived(derived("r|https://api-a.test/|", "for-a-2", 2_000));
    assert_eq!(s.derived.len(), 2, "one per key");
    let back = SessionSecrets::decode(&s.encode()).expect("decodes");
    let get = |key: &str, now: u64| {
        back.derived_token(key, now, 30)
            .map(|t| t.expose().to_owned())
    };
    assert_eq!(
        get("r|https://api-a.test/|", 100).as_deref(),
        Some("for-a-2")
    );
    assert_eq!(get("r|https://api-b.test/|", 100).as_deref(), Some("for-b"));
    assert_eq!(get("r|https://api-b.test/|", 970), None, "inside the skew");
    assert_eq!(get("x|https://api-b.test/|", 100), None, "another key");
    for i in 0..40 {
        s.put_derived(derived(&format!("k{i}"), "t", 5_000 + i));
    }
    assert_eq!(s.derived.len(), MAX_DERIVED);
    assert!(s.derived_token("k39", 0, 0).is_some(), "the newest stays");
}

#[test]
fn secrets_written_before_derived_tokens_still_decode() {
    #[derive(Serialize)]
    struct V2<'a>(
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
    );
    let old =
        postcard::to_stdvec(&V2("at", Some("rt"), None, "{}", Some("openid"))).expect("encode");
    let back = SessionSecrets::decode(&old).expect("decodes");
    assert_eq!(back.access_token.expose(), "at");
    assert_eq!(back.scopes.as_deref(), Some("openid"));
    assert!(back.derived.is_empty());
}

#[test]
fn the_dpop_key_round_trips_and_secrets_written_before_it_still_decode() {
    let mut s = SessionSecrets {
        access_token: SecretString::new("at"),
        refresh_token: Some(SecretString::new("rt")),
        id_token: None,
        claims: "{}".into(),
        scopes: Some("openid".into()),
        derived: Vec::new(),
        dpop_key: Some(zeroize::Zeroizing::new(vec![7; 138])),
    };
    s.put_derived(derived("k", "for-k", 5));
    let back = SessionSecrets::decode(&s.encode()).expect("decodes");
    assert_eq!(
        back.dpop_key.as_deref().map(Vec::as_slice),
        Some(&[7u8; 138][..])
    );
    assert_eq!(back.derived.len(), 1);
    // The layout before `dpop_key` (V3): derived tokens kept, no key.
    #[derive(Serialize)]
    struct V3<'a>(
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
        Vec<(&'a str, &'a str, u64)>,
    );
    let old = postcard::to_stdvec(&V3("at", Some("rt"), None, "{}", None, vec![("k", "t", 9)]))
        .expect("encode");
    let back = SessionSecrets::decode(&old).expect("decodes");
    assert_eq!(back.derived.len(), 1);
    assert_eq!(back.derived[0].access_token.expose(), "t");
    assert!(back.dpop_key.is_none());
}

/// `bytes` with the varint at `at` (one byte, < 128) written over-long
/// (two bytes): postcard reads it as the same value.
fn overlong(bytes: &[u8], at: usize) -> Vec<u8> {
    assert!(bytes[at] < 0x80);
    [&bytes[..at], &[bytes[at] | 0x80, 0x00], &bytes[at + 1..]].concat()
}

#[test]
fn each_record_has_one_encoding_only() {
    // The record body: `key_id`'s length written over-long.
    let full = sample().encode(sign);
    let (signed, tag) = full.split_at(full.len() - TAG_LEN);
    assert_eq!(signed[HEADER_LEN], 2, "the length of \"k1\"");
    let long = [&overlong(signed, HEADER_LEN)[..], tag].concat();
    assert_eq!(
        StoredSession::decode(&long).map(|t| t.record),
        Err(RecordError::Malformed)
    );
    // Format 2's body too.
    let text = format_text::encode_record(&sample(), sign);
    let (signed, tag) = text.split_at(text.len() - TAG_LEN);
    let long = [&overlong(signed, HEADER_LEN)[..], tag].concat();
    assert!(StoredSession::decode(&text).is_ok());
    assert_eq!(
        StoredSession::decode(&long).map(|t| t.record),
        Err(RecordError::Malformed)
    );
    // The metadata: an over-long length, a byte too many.
    let meta = SessionMeta {
        sub: "a".into(),
        sid: None,
        last_ip: None,
        user_agent: None,
    }
    .encode();
    assert!(SessionMeta::decode(&meta).is_ok());
    assert!(SessionMeta::decode(&overlong(&meta, 0)).is_err());
    assert!(SessionMeta::decode(&[&meta[..], &[0]].concat()).is_err());
    // The secrets, current layout: the access token's length over-long,
    // a byte too many, and claims in a form the encoder would not pick.
    let s = SessionSecrets {
        access_token: SecretString::new("at"),
        refresh_token: None,
        id_token: Some(SecretString::new("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")),
        claims: "{\"sub\":\"a\"}".into(),
        scopes: None,
        derived: Vec::new(),
        dpop_key: None,
    };
    let good = s.encode();
    assert!(SessionSecrets::decode(&good).is_ok());
    // Marker, then the token: variant `Text` (0), length 2, "at".
    assert_eq!(&good[2..6], &[0, 2, b'a', b't']);
    assert!(SessionSecrets::decode(&overlong(&good, 3)).is_err());
    assert!(SessionSecrets::decode(&[&good[..], &[0]].concat()).is_err());
    let layout = |claims| {
        let mut out = CLAIMS_ONCE_SECRETS.to_vec();
        let v = SecretsOut {
            access_token: packed::TokenRef(&s.access_token),
            refresh_token: None,
            id_token: s.id_token.as_ref().map(packed::TokenRef),
            claims,
            scopes: None,
            derived: &[],
            dpop_key: None,
        };
        out.extend(postcard::to_stdvec(&v).expect("encode"));
        out
    };
    use std::borrow::Cow;
    let marker = claims::PackedClaims::FromIdToken {
        dropped: Vec::new(),
        extras: Cow::Borrowed(""),
    };
    assert_eq!(layout(marker), good.to_vec(), "what the encoder picks");
    for odd in [
        claims::PackedClaims::Text(Cow::Borrowed("{\"sub\":\"a\"}")),
        claims::PackedClaims::FromIdToken {
            dropped: Vec::new(),
            extras: Cow::Borrowed("{}"),
        },
        claims::PackedClaims::FromIdToken {
            dropped: vec![Cow::Borrowed("absent")],
            extras: Cow::Borrowed(""),
        },
    ] {
        // Decoding checks structure only; the claims' form is checked at
        // their first use, and refused there, at every use.
        let bytes = layout(odd);
        let opened = SessionSecrets::decode(&bytes).expect("structurally sound");
        assert_eq!(opened.access_token.expose(), "at");
        assert_eq!(opened.claims_json().err(), Some(RecordError::Claims));
        assert_eq!(opened.claims_json().err(), Some(RecordError::Claims));
        // Written again (a derived token, a re-key), it stays what it was,
        // in either layout: refused again, never other claims.
        assert_eq!(opened.encode().to_vec(), bytes);
        assert_eq!(opened.encode_as(RecordLayout::Previous).to_vec(), bytes);
    }
    // The layout before, claims as text: a byte too many.
    let before = format_text::encode_packed_secrets(&s);
    assert!(SessionSecrets::decode(&before).is_ok());
    assert!(SessionSecrets::decode(&[&before[..], &[0]].concat()).is_err());
}

/// What keeping the claims once and decoding strictly cost per open (a
/// cache miss): a measurement, not an assertion (ignored; run in release:
/// `cargo test --release --lib cost_of_decoding_secrets -- --ignored
/// --nocapture`). Figures in `docs/benchmarks.md`.
#[test]
#[ignore = "a measurement: run with --ignored"]
fn cost_of_decoding_secrets() {
    use base64::Engine as _;
    use std::time::Instant;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    // The fixture provider's shape: opaque access and refresh tokens, an
    // RS256 ID token, about 270 B of kept claims.
    let payload = r#"{"sub":"alice","sid":"Mh1bq8n3aQpZ0vJ4y7Xk2W","auth_time":1764920000,"acr":"0","amr":["pwd"],"name":"Alice Liddell","given_name":"Alice","family_name":"Liddell","email":"alice@example.com","email_verified":true,"locale":"en-GB","groups":["staff","dev"],"at_hash":"77QmUPtjPfzWtF2AnpK9RQ","aud":"bff-client","exp":1764923600,"iat":1764920000,"iss":"http://127.0.0.1:40001","nonce":"n-0S6_WzA2Mj4dK8cT3uYq"}"#;
    let id_token = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT","kid":"kP4x9aVb0d8sZ-_c2Wq1nT7yU3mLr5eJ"}"#),
        b64(payload.as_bytes()),
        b64(&[7u8; 256])
    );
    let mut kept: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(payload).expect("json");
    for k in ["at_hash", "aud", "exp", "iat", "iss", "nonce"] {
        kept.remove(k);
    }
    let s = SessionSecrets {
        access_token: SecretString::new("Zm9vYmFyYmF6cXV4".repeat(3)),
        refresh_token: Some(SecretString::new("cmVmcmVzaHRva2Vu".repeat(3))),
        id_token: Some(SecretString::new(id_token)),
        claims: serde_json::Value::Object(kept).to_string().into(),
        scopes: Some("openid profile email offline_access".into()),
        derived: Vec::new(),
        dpop_key: None,
    };
    let once = s.encode();
    let twice = format_text::encode_packed_secrets(&s);
    let time = |what: &str, f: &dyn Fn()| {
        const N: u32 = 20_000;
        for _ in 0..1_000 {
            f();
        }
        let t = Instant::now();
        for _ in 0..N {
            f();
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(N);
        eprintln!("{what}: {per:.2} µs");
    };
    eprintln!(
        "claims {} B; sealed secrets {} B (claims as text: {} B)",
        s.claims_json().expect("claims").len(),
        once.len(),
        twice.len()
    );
    time(
        "decode, claims kept once, not used (a miss on a route that reads no claims)",
        &|| {
            std::hint::black_box(SessionSecrets::decode(std::hint::black_box(&once)).is_ok());
        },
    );
    time(
        "decode, claims kept once, then used (rebuilt, checked: what every miss paid before)",
        &|| {
            let s = SessionSecrets::decode(std::hint::black_box(&once)).expect("decodes");
            std::hint::black_box(s.claims_json().is_ok());
        },
    );
    time("decode, claims as text (strict)", &|| {
        std::hint::black_box(SessionSecrets::decode(std::hint::black_box(&twice)).is_ok());
    });
    let id = s.id_token.as_ref().map(SecretString::expose);
    let stored =
        postcard::to_stdvec(&claims::pack(s.claims_json().expect("claims"), id)).expect("encode");
    time("  of which the claims, rebuilt and checked", &|| {
        let p: claims::PackedClaims<'_> = postcard::from_bytes(&stored).expect("decode");
        std::hint::black_box(claims::unpack_canonical(std::hint::black_box(&p), id));
    });
    time("encode (a write: login, refresh)", &|| {
        std::hint::black_box(std::hint::black_box(&s).encode());
    });
}

/// `store.record_layout = "previous"` writes the sealed secrets exactly as
/// the version before this one (85ed221) did, so its instances open them
/// during a rolling upgrade. The expected bytes are frozen: checked
/// against 85ed221 itself (built in a scratch worktree, its own
/// `SessionSecrets::encode` of these secrets gave exactly these bytes and
/// its `decode` read them back), written out here so no later change to
/// `SessionSecrets` can drift from them unnoticed.
#[test]
fn the_previous_layout_writes_the_secrets_byte_for_byte_as_the_version_before() {
    let s = SessionSecrets {
        access_token: SecretString::new("opaque-at"),
        refresh_token: Some(SecretString::new("AA.AQ")),
        id_token: Some(SecretString::new("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")),
        claims: "{\"sub\":\"a\"}".into(),
        scopes: Some("openid".into()),
        derived: vec![derived("k", "t", 9)],
        dpop_key: Some(zeroize::Zeroizing::new(vec![7; 3])),
    };
    let previous = s.encode_as(RecordLayout::Previous);
    let hex = crate::session::cookie::hex(&previous);
    assert_eq!(hex, FROZEN_PREVIOUS_SECRETS, "{hex}");
    assert!(previous.starts_with(&PACKED_SECRETS));
    assert!(
        previous.capacity() == s.encoded_capacity(),
        "the buffer never grew"
    );
    // This version reads it back, and the default layout differs.
    let back = SessionSecrets::decode(&previous).expect("decodes");
    assert_eq!(
        back.claims_json().expect("claims"),
        s.claims_json().expect("claims")
    );
    assert_eq!(
        back.encode_as(RecordLayout::Previous).to_vec(),
        previous.to_vec()
    );
    assert!(s.encode().starts_with(&CLAIMS_ONCE_SECRETS));
    assert_eq!(
        s.encode().to_vec(),
        s.encode_as(RecordLayout::Compact).to_vec()
    );
}

/// 85ed221's `SessionSecrets::encode` of the secrets above, in hex:
/// `00 02`; access token as text (`00`, 9, "opaque-at"); refresh token
/// packed (`01` some, `01` segments, 2: `00`, `01`); ID token packed (3
/// segments, the last empty); the claims as text (11 B); scopes; one
/// derived token (`k`, text `t`, expiry 9); the DPoP key (3 bytes).
const FROZEN_PREVIOUS_SECRETS: &str = "000200096f70617175652d6174010102010001010101030e7b22616c67223a226e6f6e65227d0b7b22737562223a2261227d000b7b22737562223a2261227d01066f70656e696401016b000174090103070707";

/// The claims kept once are rebuilt at their first use, not when the
/// secrets decode: a cache miss on a route that reads no claims does not
/// pay for it. Once rebuilt, the text is kept with the opened secrets.
#[test]
fn claims_kept_once_are_rebuilt_at_first_use_only() {
    let s = SessionSecrets {
        access_token: SecretString::new("at"),
        refresh_token: None,
        id_token: Some(SecretString::new(
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwibmFtZSI6IkEifQ.",
        )),
        claims: "{\"name\":\"A\",\"sub\":\"a\"}".into(),
        scopes: None,
        derived: Vec::new(),
        dpop_key: None,
    };
    let bytes = s.encode();
    assert!(bytes.starts_with(&CLAIMS_ONCE_SECRETS));
    let opened = SessionSecrets::decode(&bytes).expect("decodes");
    assert!(opened.claims.text.get().is_none(), "not rebuilt by decode");
    assert_eq!(opened.claims_json(), Ok("{\"name\":\"A\",\"sub\":\"a\"}"));
    assert!(opened.claims.text.get().is_some(), "kept once rebuilt");
    // A clone made before the first use rebuilds on its own.
    let unopened = SessionSecrets::decode(&bytes).expect("decodes");
    let copy = unopened.clone();
    assert_eq!(copy.claims_json(), opened.claims_json());
    // Written again without a first use: the same bytes.
    assert_eq!(unopened.encode().to_vec(), bytes.to_vec());
    // Without the ID token they are rebuilt from: refused, not empty.
    let mut other = SessionSecrets::decode(&bytes).expect("decodes");
    other.id_token = None;
    assert_eq!(other.claims_json(), Err(RecordError::Claims));
}

/// `(record's last activity, record's idle deadline, absolute deadline,
/// activity at)` → `(effective last activity, effective idle deadline)`,
/// with an idle timeout of 3600.
#[test]
fn activity_recorded_apart_moves_the_effective_deadlines_only_later_and_never_past_the_absolute_one()
 {
    let cases = [
        // Later activity: a new idle period from it.
        ((1_100, 4_700, 44_200, 2_000), (2_000, 5_600)),
        // Older or equal activity (a replayed value, a lost race): nothing.
        ((1_100, 4_700, 44_200, 1_000), (1_100, 4_700)),
        ((1_100, 4_700, 44_200, 1_100), (1_100, 4_700)),
        // Near the end: capped at the absolute deadline.
        ((40_000, 43_600, 44_200, 42_000), (42_000, 44_200)),
        // The record's idle deadline is later than activity + idle (a
        // config reload shortened the idle timeout): it stands.
        ((1_100, 9_000, 44_200, 2_000), (2_000, 9_000)),
    ];
    for ((last, idle, abs, at), want) in cases {
        let mut body = sample().body;
        (
            body.last_active_at,
            body.idle_expires_at,
            body.absolute_expires_at,
        ) = (last, idle, abs);
        body.with_activity(at, 3_600);
        assert_eq!(
            (body.last_active_at, body.idle_expires_at),
            want,
            "record ({last}, {idle}, {abs}), activity at {at}"
        );
        body.with_activity(at, 3_600);
        assert_eq!(
            (body.last_active_at, body.idle_expires_at),
            want,
            "applied twice"
        );
    }
}

#[test]
fn a_record_key_outlives_its_idle_deadline_by_one_idle_timeout_within_the_absolute_one() {
    let body = sample().body; // idle deadline 4 700, absolute 44 200
    assert_eq!(
        body.key_ttl_millis(3_600, 1_100_000),
        (8_300 - 1_100) * 1000
    );
    // Never past the absolute deadline, and at least 1 ms.
    assert_eq!(
        body.key_ttl_millis(86_400, 1_100_000),
        (44_200 - 1_100) * 1000
    );
    assert_eq!(body.key_ttl_millis(3_600, 50_000_000), 1);
    // The TTL records had before: until the deadline itself.
    assert_eq!(body.ttl_millis(1_100_000), (4_700 - 1_100) * 1000);
}
