//! The user's claims stored once. Owns how the sealed secrets hold
//! `claims_json`: most of it is the ID token's payload, which the record
//! keeps anyway, so when the claims can be rebuilt from that payload the
//! record stores only what differs (claims the payload lacks or has
//! otherwise, and payload claims the session does not keep). Nothing here
//! validates a token or decides which claims a session keeps: that is the
//! login and refresh flows' job; this only stores their result.
//!
//! Exact by construction: the rebuilt form is only chosen when rebuilding
//! gives back `claims_json` byte for byte (and is smaller); anything else
//! is stored as text.

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The payload claims a rebuild drops without naming them: the protocol
/// claims the login flow never keeps (`oidc::claims`' list when this layout
/// was made). Part of the stored format: records rely on it, so it never
/// changes, whatever the flows keep later (a claim added to their list is
/// named in `dropped`; one taken off it is carried in `extras`).
const IMPLIED_DROPS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "azp",
    "jti",
    "typ",
    "session_state",
];

/// `claims_json` as the sealed secrets store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum PackedClaims<'a> {
    /// The JSON text as it is.
    Text(#[serde(borrow)] Cow<'a, str>),
    /// Rebuilt from the ID token's payload: its claims less
    /// [`IMPLIED_DROPS`] and `dropped`, then `extras` (a JSON object, or
    /// empty for none) inserted over them, serialised.
    FromIdToken {
        #[serde(borrow)]
        dropped: Vec<Cow<'a, str>>,
        #[serde(borrow)]
        extras: Cow<'a, str>,
    },
}

/// The claims of a compact JWS's payload, if `id_token` is one whose
/// payload is a JSON object.
fn payload_of(id_token: &str) -> Option<Map<String, Value>> {
    let mut parts = id_token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The claims [`PackedClaims::FromIdToken`] stands for.
fn rebuild(
    mut payload: Map<String, Value>,
    dropped: &[Cow<'_, str>],
    extras: &str,
) -> Option<String> {
    for k in IMPLIED_DROPS {
        payload.remove(*k);
    }
    for k in dropped {
        payload.remove(k.as_ref());
    }
    if !extras.is_empty() {
        let extras: Map<String, Value> = serde_json::from_str(extras).ok()?;
        payload.extend(extras);
    }
    Some(Value::Object(payload).to_string())
}

/// The smallest stored form of `claims_json` next to `id_token`.
pub(super) fn pack<'a>(claims_json: &'a str, id_token: Option<&str>) -> PackedClaims<'a> {
    let text = PackedClaims::Text(Cow::Borrowed(claims_json));
    let Some(payload) = id_token.and_then(payload_of) else {
        return text;
    };
    let Ok(claims) = serde_json::from_str::<Map<String, Value>>(claims_json) else {
        return text;
    };
    let mut dropped: Vec<Cow<'_, str>> = Vec::new();
    for k in payload.keys() {
        if !IMPLIED_DROPS.contains(&k.as_str()) && !claims.contains_key(k) {
            dropped.push(Cow::Owned(k.clone()));
        }
    }
    let extras: Map<String, Value> = claims
        .into_iter()
        .filter(|(k, v)| IMPLIED_DROPS.contains(&k.as_str()) || payload.get(k) != Some(v))
        .collect();
    let extras = if extras.is_empty() {
        String::new()
    } else {
        Value::Object(extras).to_string()
    };
    // Cheap test first: the rebuilt form only pays if it is smaller.
    if extras.len() + dropped.iter().map(|d| d.len()).sum::<usize>() >= claims_json.len()
        || rebuild(payload, &dropped, &extras).as_deref() != Some(claims_json)
    {
        return text;
    }
    let rebuilt = PackedClaims::FromIdToken {
        dropped,
        extras: Cow::Owned(extras),
    };
    if stored_len(&rebuilt) < stored_len(&text) {
        rebuilt
    } else {
        text
    }
}

/// The claims' JSON text back from their stored form, strictly: `None`
/// unless `packed` is what [`pack`] writes for the claims it stands for
/// (so a record has one encoding). Checks the rebuilt form against
/// `pack`'s rules rather than packing again, which would parse the payload
/// and the claims a second time on every cache miss.
pub(super) fn unpack_canonical(
    packed: &PackedClaims<'_>,
    id_token: Option<&str>,
) -> Option<String> {
    let (dropped, extras) = match packed {
        PackedClaims::Text(t) => {
            return matches!(pack(t, id_token), PackedClaims::Text(_)).then(|| t.to_string());
        }
        PackedClaims::FromIdToken { dropped, extras } => (dropped, extras.as_ref()),
    };
    let mut payload = payload_of(id_token?)?;
    for k in IMPLIED_DROPS {
        payload.remove(*k);
    }
    // `pack` names them once each, in the payload's (sorted) key order, and
    // only claims the payload has.
    if !dropped.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    for k in dropped {
        payload.remove(k.as_ref())?;
    }
    let extras_map: Map<String, Value> = if extras.is_empty() {
        Map::new()
    } else {
        let m: Map<String, Value> = serde_json::from_str(extras).ok()?;
        // Written by serde_json, never empty (that is "").
        if m.is_empty() || serde_json::to_string(&m).ok()? != *extras {
            return None;
        }
        m
    };
    for (k, v) in &extras_map {
        // Only claims the payload lacks or has otherwise, never a dropped one.
        let implied = IMPLIED_DROPS.contains(&k.as_str());
        if (!implied && payload.get(k) == Some(v)) || dropped.iter().any(|d| d == k) {
            return None;
        }
    }
    payload.extend(extras_map);
    let claims = Value::Object(payload).to_string();
    // And only where it is the smaller form.
    let smaller = extras.len() + dropped.iter().map(|d| d.len()).sum::<usize>() < claims.len();
    (smaller && stored_len(packed) < stored_len(&PackedClaims::Text(Cow::Borrowed(&claims))))
        .then_some(claims)
}

impl PackedClaims<'_> {
    /// The same form, owning its text (kept past the decoded bytes).
    fn into_owned(self) -> PackedClaims<'static> {
        match self {
            PackedClaims::Text(t) => PackedClaims::Text(Cow::Owned(t.into_owned())),
            PackedClaims::FromIdToken { dropped, extras } => PackedClaims::FromIdToken {
                dropped: dropped
                    .into_iter()
                    .map(|d| Cow::Owned(d.into_owned()))
                    .collect(),
                extras: Cow::Owned(extras.into_owned()),
            },
        }
    }
}

/// A session's claims as its opened secrets hold them: JSON text (from a
/// login or a refresh, or a layout that stores them as text), or the form
/// the layout after `CLAIMS_ONCE_SECRETS` stored, checked and rebuilt from
/// the ID token at its first use only. Most requests never read the
/// claims (only identity headers, policies, forward-auth answers, the
/// user and session endpoints, step-up, refresh and logout do), so a
/// cache miss on any other route does not pay for the rebuild.
#[derive(Clone)]
pub struct Claims {
    /// The stored form, until rebuilt (`None`: text from the start).
    stored: Option<PackedClaims<'static>>,
    /// The text; `Some(None)` once a rebuild failed: the stored form is
    /// not what `pack` writes next to this ID token (never so for a record
    /// this code wrote and sealed).
    pub(super) text: OnceLock<Option<String>>,
}

impl Claims {
    /// Claims read from a record, rebuilt when first asked for.
    pub(super) fn stored(form: PackedClaims<'_>) -> Self {
        Self {
            stored: Some(form.into_owned()),
            text: OnceLock::new(),
        }
    }

    /// The JSON text, rebuilding it next to `id_token` (the ID token of the
    /// secrets these claims came with) at the first call; `None` if the
    /// stored form does not rebuild, at this call and every later one.
    pub(super) fn text(&self, id_token: Option<&str>) -> Option<&str> {
        self.text
            .get_or_init(|| {
                let form = self.stored.as_ref()?;
                unpack_canonical(form, id_token)
            })
            .as_deref()
    }

    /// The form read from the record, if these claims came from one
    /// stored kept once.
    pub(super) fn stored_form(&self) -> Option<&PackedClaims<'static>> {
        self.stored.as_ref()
    }

    /// At least the length of the text, or of the stored form (for
    /// sizing an encoding buffer).
    pub(super) fn len_bound(&self) -> usize {
        match (self.text.get(), &self.stored) {
            (Some(Some(t)), _) => t.len(),
            (_, Some(form)) => stored_len(form),
            (_, None) => 0,
        }
    }
}

impl From<String> for Claims {
    fn from(text: String) -> Self {
        Self {
            stored: None,
            text: OnceLock::from(Some(text)),
        }
    }
}

impl From<&str> for Claims {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

/// How many bytes `p` takes in a record.
pub(super) fn stored_len(p: &PackedClaims<'_>) -> usize {
    postcard::experimental::serialized_size(p).unwrap_or(usize::MAX)
}

/// The claims' JSON text back from their stored form; `None` if it names
/// an ID token payload that is not there.
#[cfg(test)]
pub(super) fn unpack(packed: PackedClaims<'_>, id_token: Option<&str>) -> Option<String> {
    match packed {
        PackedClaims::Text(t) => Some(t.into_owned()),
        PackedClaims::FromIdToken { dropped, extras } => {
            rebuild(payload_of(id_token?)?, &dropped, &extras)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode([9u8; 64])
        )
    }

    /// Packs, stores (postcard), reads back and unpacks; the claims must
    /// come back byte for byte. Returns whether the rebuilt form was used.
    fn round_trip(claims_json: &str, id_token: Option<&str>) -> bool {
        let packed = pack(claims_json, id_token);
        let rebuilt = matches!(packed, PackedClaims::FromIdToken { .. });
        let bytes = postcard::to_stdvec(&packed).expect("encode");
        let back: PackedClaims<'_> = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(
            unpack(back, id_token).as_deref(),
            Some(claims_json),
            "{claims_json} next to {id_token:?}"
        );
        let back: PackedClaims<'_> = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(
            unpack_canonical(&back, id_token).as_deref(),
            Some(claims_json),
            "strictly: {claims_json} next to {id_token:?}"
        );
        if rebuilt {
            // The text form of the same claims is not what `pack` writes.
            let text = PackedClaims::Text(claims_json.into());
            assert_eq!(unpack_canonical(&text, id_token), None, "{claims_json}");
        }
        if rebuilt {
            let text =
                postcard::to_stdvec(&PackedClaims::Text(claims_json.into())).expect("encode");
            assert!(bytes.len() < text.len(), "{claims_json}");
        }
        rebuilt
    }

    const PAYLOAD: &str = r#"{"iss":"https://op.test","aud":"bff","exp":1700000600,"iat":1700000000,"nonce":"n-0S6_WzA2Mj","at_hash":"77QmUPtjPfzWtF2AnpK9RQ","sub":"alice","sid":"s-123","auth_time":1700000000,"acr":"urn:mace:incommon:iap:silver","name":"Alice Liddell","email":"alice@example.com","email_verified":true,"groups":["staff","dev"],"address":{"country":"UK"},"n":1.5e3}"#;

    /// What the login flow keeps of a payload: the protocol claims out
    /// (the flows' list, which may differ from the format's own).
    fn kept(payload: &str, drop: &[&str]) -> Map<String, Value> {
        let mut m: Map<String, Value> = serde_json::from_str(payload).expect("json");
        m.retain(|k, _| !IMPLIED_DROPS.contains(&k.as_str()) && !drop.contains(&k.as_str()));
        m
    }

    fn json(m: &Map<String, Value>) -> String {
        Value::Object(m.clone()).to_string()
    }

    #[test]
    fn claims_equal_to_the_payload_are_stored_as_a_marker() {
        let id = jwt(PAYLOAD);
        let claims = json(&kept(PAYLOAD, &[]));
        assert!(round_trip(&claims, Some(&id)));
        let packed = pack(&claims, Some(&id));
        assert_eq!(
            packed,
            PackedClaims::FromIdToken {
                dropped: Vec::new(),
                extras: Cow::Borrowed("")
            }
        );
        assert_eq!(postcard::to_stdvec(&packed).expect("encode").len(), 3);
    }

    #[test]
    fn every_shape_of_claims_comes_back_byte_for_byte() {
        let id = jwt(PAYLOAD);
        let base = kept(PAYLOAD, &[]);
        let mut shapes: Vec<(String, Option<String>)> = Vec::new();
        // Payload minus some claims (a flow that strips more than the
        // format implies).
        shapes.push((json(&kept(PAYLOAD, &["sid", "acr"])), Some(id.clone())));
        // Payload plus userinfo claims, and with a claim userinfo changed.
        let mut info = base.clone();
        info.insert("picture".into(), "https://img.test/a.png".into());
        info.insert("phone_number".into(), "+44 1".into());
        shapes.push((json(&info), Some(id.clone())));
        info.insert("name".into(), "Alice L.".into());
        info.insert("email_verified".into(), Value::Null);
        shapes.push((json(&info), Some(id.clone())));
        // A protocol claim the flows keep after all (e.g. `azp`).
        let mut azp = base.clone();
        azp.insert("azp".into(), "bff".into());
        azp.insert("exp".into(), 5.into());
        shapes.push((json(&azp), Some(id.clone())));
        // After a refresh that replaced the ID token: old claims the new
        // payload lacks stay, the new values win.
        let new_payload =
            r#"{"iss":"https://op.test","sub":"alice","name":"Alice R.","iat":1700009000}"#;
        let mut merged = base.clone();
        merged.extend(kept(new_payload, &[]));
        shapes.push((json(&merged), Some(jwt(new_payload))));
        // A refresh without a new ID token: old claims next to the old token.
        shapes.push((json(&base), Some(id.clone())));
        // No ID token; an ID token that is no JWT (opaque, a JWE, a
        // payload that is no JSON object or not base64url).
        shapes.push((json(&base), None));
        for other in [
            "opaque-id-token".to_owned(),
            format!("{id}.x.y"),
            jwt("[1,2]"),
            jwt("not json"),
            "a.b!.c".into(),
        ] {
            shapes.push((json(&base), Some(other)));
        }
        // Claims that are not what serde_json writes (spacing, key order,
        // number forms, escapes), or not an object at all: stored as text.
        for odd in [
            r#"{"sub": "alice"}"#,
            r#"{"sub":"alice","name":"Alice Liddell","email":"alice@example.com","acr":"x"}"#,
            r#"{"n":1500,"sub":"alice"}"#,
            r#"{"n":1.5e3,"sub":"alice"}"#,
            r#"{"sub":"\u0061lice"}"#,
            "[]",
            "",
            "{}",
        ] {
            shapes.push((odd.into(), Some(id.clone())));
        }
        // A sweep of subsets and additions over a generated payload.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..300 {
            let mut p = Map::new();
            let mut c = Map::new();
            for i in 0..12 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key =
                    ["iss", "aud", "sub", "name", "nonce", "k", "g", "email"][(x % 8) as usize];
                let key = format!("{key}{}", i % 3);
                let value = match (x >> 8) % 5 {
                    0 => Value::from(x % 1000),
                    1 => Value::from(format!("v{}", x % 77)),
                    2 => Value::from(vec![Value::from("a"), Value::from(x % 3)]),
                    3 => Value::from((x % 100) as f64 / 8.0),
                    _ => Value::Bool(x.is_multiple_of(2)),
                };
                match (x >> 16) % 4 {
                    0 => {
                        p.insert(key, value);
                    }
                    1 => {
                        c.insert(key, value);
                    }
                    _ => {
                        p.insert(key.clone(), value.clone());
                        c.insert(key, value);
                    }
                }
            }
            shapes.push((json(&c), Some(jwt(&json(&p)))));
        }
        let mut rebuilt = 0;
        for (claims, id_token) in &shapes {
            rebuilt += usize::from(round_trip(claims, id_token.as_deref()));
        }
        assert!(rebuilt > shapes.len() / 3, "{rebuilt} of {}", shapes.len());
    }

    #[test]
    fn a_rebuilt_form_without_its_id_token_does_not_open() {
        let id = jwt(PAYLOAD);
        let claims = json(&kept(PAYLOAD, &[]));
        let packed = pack(&claims, Some(&id));
        assert_eq!(unpack(packed, None), None);
        let odd = PackedClaims::FromIdToken {
            dropped: Vec::new(),
            extras: Cow::Borrowed("[not json"),
        };
        assert_eq!(unpack(odd, Some(&id)), None);
    }

    #[test]
    fn rebuilt_forms_pack_would_not_write_are_refused() {
        let id = jwt(
            r#"{"iss":"i","sub":"alice","name":"Alice Liddell","email":"a@example.com","groups":["a","b","c"]}"#,
        );
        let form = |dropped: &[&'static str], extras: &'static str| PackedClaims::FromIdToken {
            dropped: dropped.iter().map(|d| Cow::Borrowed(*d)).collect(),
            extras: Cow::Borrowed(extras),
        };
        let ok = |p: PackedClaims<'_>| unpack_canonical(&p, Some(&id));
        assert!(ok(form(&[], "")).is_some());
        assert!(ok(form(&["email"], "")).is_some());
        assert!(ok(form(&["email", "groups"], "")).is_some());
        assert!(ok(form(&["name"], r#"{"x":1}"#)).is_some());
        for odd in [
            form(&["groups", "email"], ""),         // out of order
            form(&["email", "email"], ""),          // twice
            form(&["absent"], ""),                  // not in the payload
            form(&["iss"], ""),                     // implied already
            form(&[], "{}"),                        // empty extras are ""
            form(&[], r#"{ "x":1}"#),               // not serde_json's text
            form(&[], r#"{"sub":"alice"}"#),        // the payload's own value
            form(&["name"], r#"{"name":"B"}"#),     // dropped and extra
            form(&[], "[1]"),                       // not an object
            form(&["email", "groups", "name"], ""), // not smaller than the text
        ] {
            assert_eq!(ok(odd), None);
        }
        // An implied claim kept after all is an extra even with the
        // payload's value.
        assert!(ok(form(&[], r#"{"iss":"i"}"#)).is_some());
    }
}
