//! Per-route authorization: a route's policy (`[[routes]] require`) and the
//! one check every entry point makes against a session's claims and granted
//! scopes — proxied requests, WebSocket handshakes and forward-auth.
//!
//! A leaf of the crate: pure functions over JSON claims, no I/O, no HTTP, no
//! configuration types (the config module builds a [`Policy`] from its raw
//! form with [`ClaimPath::parse`] and the [`Condition`] constructors).
//!
//! A refusal names what the route requires, never what the user has: the
//! message is built from the policy alone, so a 403 cannot be used to read
//! other claims or the user's actual values.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

/// A dotted path into the claims: `realm_access.roles` reads
/// `claims["realm_access"]["roles"]`. A literal dot inside a claim name is
/// written `\.` and a literal backslash `\\` (so the claim
/// `https://example.com/groups` is `https://example\.com/groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    /// As written in the configuration: what a refusal names.
    written: String,
    segments: Vec<String>,
}

impl ClaimPath {
    /// Parses a written path; the error says what is wrong with it.
    pub fn parse(written: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = written.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('.' | '\\')) => current.push(e),
                    _ => {
                        return Err(
                            "has a `\\` that is not followed by `.` or `\\` (write `\\.` for a literal dot, `\\\\` for a backslash)"
                                .into(),
                        );
                    }
                },
                '.' => segments.push(std::mem::take(&mut current)),
                c if c.is_control() => return Err("has a control character".into()),
                c => current.push(c),
            }
        }
        segments.push(current);
        if segments.iter().any(String::is_empty) {
            return Err(
                "has an empty segment (paths look like `groups` or `realm_access.roles`; no leading, trailing or double dots)"
                    .into(),
            );
        }
        Ok(Self {
            written: written.to_owned(),
            segments,
        })
    }

    /// The value at this path, if every segment names an object member.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut v = claims.get(first)?;
        for s in rest {
            v = v.as_object()?.get(s)?;
        }
        Some(v)
    }

    /// The values of this path: a string is one value (a `scope` claim's
    /// space-separated list is split), an array gives its scalar elements,
    /// a number or boolean its JSON text; objects and `null` give none.
    pub fn values<'a>(&self, claims: &'a Map<String, Value>) -> Vec<Cow<'a, str>> {
        let split = self.segments.last().is_some_and(|s| s == "scope");
        self.lookup(claims)
            .map(|v| scalar_values(v, split))
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

fn scalar_values(v: &Value, split_spaces: bool) -> Vec<Cow<'_, str>> {
    match v {
        Value::String(s) if split_spaces => s.split_ascii_whitespace().map(Cow::Borrowed).collect(),
        Value::Array(items) => items
            .iter()
            .flat_map(|i| match i {
                Value::Array(_) => Vec::new(),
                other => scalar_values(other, false),
            })
            .collect(),
        Value::String(s) => vec![Cow::Borrowed(s.as_str())],
        Value::Number(n) => vec![Cow::Owned(n.to_string())],
        Value::Bool(b) => vec![Cow::Owned(b.to_string())],
        Value::Null | Value::Object(_) => Vec::new(),
    }
}

/// How a claim's values must relate to the listed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// At least one listed value is among the claim's values.
    AnyOf(Vec<String>),
    /// Every listed value is among the claim's values.
    AllOf(Vec<String>),
}

/// One condition of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A claim of the session (ID token and userinfo claims).
    Claim { path: ClaimPath, rule: Match },
    /// Every listed scope was granted to the session's access token.
    Scopes(Vec<String>),
    /// The login's `acr` claim is one of the listed values.
    Acr(Vec<String>),
}

/// A route's policy: every condition must hold (AND). Empty: any session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub conditions: Vec<Condition>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

/// Why a session may not use a route: the conditions it failed, described
/// from the policy alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRefusal {
    pub missing: Vec<String>,
}

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Access denied: this route {}.",
            self.missing.join("; and ")
        )
    }
}

impl std::error::Error for PolicyRefusal {}

/// Whether a session with `claims` and the space-separated granted `scopes`
/// satisfies `policy`.
pub fn check(
    policy: &Policy,
    claims: &Map<String, Value>,
    scopes: &str,
) -> Result<(), PolicyRefusal> {
    let missing: Vec<String> = policy
        .conditions
        .iter()
        .filter(|c| !holds(c, claims, scopes))
        .map(describe)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PolicyRefusal { missing })
    }
}

fn holds(condition: &Condition, claims: &Map<String, Value>, scopes: &str) -> bool {
    match condition {
        Condition::Claim { path, rule } => {
            let have = path.values(claims);
            let has = |want: &String| have.iter().any(|h| h == want.as_str());
            match rule {
                Match::AnyOf(want) => want.iter().any(has),
                Match::AllOf(want) => want.iter().all(has),
            }
        }
        Condition::Scopes(want) => {
            let granted: Vec<&str> = scopes.split_ascii_whitespace().collect();
            want.iter().all(|w| granted.contains(&w.as_str()))
        }
        Condition::Acr(want) => match claims.get("acr") {
            Some(Value::String(acr)) => want.iter().any(|w| w == acr),
            _ => false,
        },
    }
}

fn describe(condition: &Condition) -> String {
    match condition {
        Condition::Claim {
            path,
            rule: Match::AnyOf(want),
        } => format!("requires one of the {path} {}", want.join(", ")),
        Condition::Claim {
            path,
            rule: Match::AllOf(want),
        } => format!("requires all of the {path} {}", want.join(", ")),
        Condition::Scopes(want) => format!("requires the scopes {}", want.join(", ")),
        Condition::Acr(want) => format!(
            "requires a login with an authentication context (acr) of {}",
            want.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn path(p: &str) -> ClaimPath {
        ClaimPath::parse(p).expect("valid path")
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn any_of(p: &str, want: &[&str]) -> Condition {
        Condition::Claim {
            path: path(p),
            rule: Match::AnyOf(want.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn all_of(p: &str, want: &[&str]) -> Condition {
        Condition::Claim {
            path: path(p),
            rule: Match::AllOf(want.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn claim_paths_split_on_dots_and_unescape_backslashes() {
        assert_eq!(path("groups").segments, ["groups"]);
        assert_eq!(
            path("realm_access.roles").segments,
            ["realm_access", "roles"]
        );
        assert_eq!(
            path(r"https://example\.com/groups").segments,
            ["https://example.com/groups"]
        );
        assert_eq!(path(r"a\\.b").segments, [r"a\", "b"]);
        for bad in ["", ".a", "a.", "a..b", r"a\b", "a\\", "a\u{7}b"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_matcher_follows_its_table() {
        let user = claims(json!({
            "groups": ["staff", "ops"],
            "realm_access": { "roles": ["reader", "writer"] },
            "department": "finance",
            "scope": "read write",
            "email_verified": true,
            "acr": "mfa",
            "https://example.com/tier": "gold",
        }));
        let cases: Vec<(Condition, &str, bool)> = vec![
            (any_of("groups", &["admin", "ops"]), "", true),
            (any_of("groups", &["admin"]), "", false),
            (all_of("groups", &["staff", "ops"]), "", true),
            (all_of("groups", &["staff", "admin"]), "", false),
            (all_of("realm_access.roles", &["reader"]), "", true),
            (any_of("realm_access.roles", &["admin"]), "", false),
            (any_of("realm_access", &["reader"]), "", false),
            (any_of("department", &["finance"]), "", true),
            (any_of("department", &["fin"]), "", false),
            (any_of("missing.claim", &["x"]), "", false),
            (any_of("scope", &["write"]), "", true),
            (any_of("email_verified", &["true"]), "", true),
            (any_of(r"https://example\.com/tier", &["gold"]), "", true),
            (Condition::Scopes(vec!["read".into()]), "openid read", true),
            (
                Condition::Scopes(vec!["read".into(), "admin".into()]),
                "openid read",
                false,
            ),
            (Condition::Scopes(vec!["read".into()]), "", false),
            (Condition::Acr(vec!["mfa".into(), "hwk".into()]), "", true),
            (Condition::Acr(vec!["hwk".into()]), "", false),
        ];
        for (condition, scopes, want) in cases {
            let policy = Policy {
                conditions: vec![condition.clone()],
            };
            assert_eq!(
                check(&policy, &user, scopes).is_ok(),
                want,
                "{condition:?} with scopes {scopes:?}"
            );
        }
    }

    #[test]
    fn conditions_combine_with_and_and_the_refusal_names_only_what_the_policy_asks() {
        let user = claims(json!({ "groups": ["staff", "secret-project"], "email": "a@b.c" }));
        let policy = Policy {
            conditions: vec![
                any_of("groups", &["staff"]),
                any_of("groups", &["admin", "ops"]),
                Condition::Scopes(vec!["read".into()]),
            ],
        };
        let refusal = check(&policy, &user, "openid").expect_err("refused");
        let text = refusal.to_string();
        assert_eq!(
            text,
            "Access denied: this route requires one of the groups admin, ops; and requires the scopes read."
        );
        assert!(!text.contains("secret-project") && !text.contains("a@b.c"));
        assert!(check(&Policy::default(), &user, "").is_ok());
    }

    proptest! {
        /// An `any_of` policy never admits claims that hold none of the
        /// listed values, whatever else they hold.
        #[test]
        fn any_of_never_admits_claims_lacking_every_listed_value(
            listed in prop::collection::vec("[a-z]{1,6}", 1..5),
            held in prop::collection::vec("[a-z]{1,6}", 0..8),
            as_string in any::<bool>(),
        ) {
            let held: Vec<String> = held.into_iter().filter(|h| !listed.contains(h)).collect();
            let value = if as_string {
                held.first().map_or(Value::Null, |h| Value::String(h.clone()))
            } else {
                json!(held)
            };
            let user = claims(json!({ "groups": value, "nested": { "groups": held } }));
            for p in ["groups", "nested.groups"] {
                let policy = Policy {
                    conditions: vec![Condition::Claim {
                        path: path(p),
                        rule: Match::AnyOf(listed.clone()),
                    }],
                };
                prop_assert!(check(&policy, &user, "").is_err());
            }
        }

        /// `all_of` admits exactly the claims holding every listed value.
        #[test]
        fn all_of_admits_exactly_supersets(
            listed in prop::collection::vec("[a-d]", 1..4),
            held in prop::collection::vec("[a-d]", 0..5),
        ) {
            let user = claims(json!({ "roles": held.clone() }));
            let policy = Policy { conditions: vec![Condition::Claim {
                path: path("roles"),
                rule: Match::AllOf(listed.clone()),
            }] };
            let superset = listed.iter().all(|l| held.contains(l));
            prop_assert_eq!(check(&policy, &user, "").is_ok(), superset);
        }
    }
}
