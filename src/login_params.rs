//! The query of `/auth/login`: `return_to` and the authorization-request
//! parameters the SPA may pass on to the provider — `prompt`,
//! `login_hint`, `acr_values`, `max_age`, `ui_locales`, and the extra names
//! listed in `oidc.login_parameters`. Each value is bounded and checked
//! here; any other parameter, a repeated one, or a value out of bounds is
//! refused (400), so a typo (`acr_value`) never silently becomes a login
//! that asks for less than the SPA meant.

use crate::step_up::is_acr_token;

/// The parameters every deployment accepts from the SPA.
pub const STANDARD: &[&str] = &[
    "prompt",
    "login_hint",
    "acr_values",
    "max_age",
    "ui_locales",
];

/// The `prompt` values of OIDC Core 3.1.2.1.
const PROMPTS: &[&str] = &["none", "login", "consent", "select_account"];

/// The longest value of any login parameter, in bytes: it keeps the
/// authorization URL and the sealed login cookie small.
pub const MAX_VALUE_BYTES: usize = 256;

/// `max_age` above this (ten years, in seconds) is refused.
const MAX_MAX_AGE: u64 = 315_360_000;

/// What `/auth/login` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginQuery {
    pub return_to: Option<String>,
    /// Parameters for the authorization request, in the order given.
    pub params: Vec<(String, String)>,
    /// `acr_values`, normalised (single spaces), for the callback's check.
    pub acr_values: Option<String>,
    /// `max_age` in seconds, for the callback's check.
    pub max_age: Option<u64>,
    /// `prompt=none`: a silent check, whose "log in first" answers return
    /// to the app instead of an error page.
    pub silent: bool,
}

/// Reads `/auth/login`'s query (`None`: no query). `extras` are the names
/// in `oidc.login_parameters`. The error is a sentence for the 400 page;
/// it names the parameter (sanitised) but never echoes a value.
pub fn parse(query: Option<&str>, extras: &[String]) -> Result<LoginQuery, String> {
    let mut out = LoginQuery::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let name = k.as_ref();
        if seen.iter().any(|s| s == name) {
            return Err(format!(
                "The login parameter `{}` is repeated.",
                shown(name)
            ));
        }
        if seen.len() > STANDARD.len() + extras.len() {
            return Err("There are too many login parameters.".into());
        }
        seen.push(name.to_owned());
        if name == "return_to" {
            out.return_to = Some(v.into_owned());
            continue;
        }
        let standard = STANDARD.contains(&name);
        if !standard && !extras.iter().any(|e| e == name) {
            return Err(format!(
                "The login parameter `{}` is not accepted (allowed: return_to, {}{}{}).",
                shown(name),
                STANDARD.join(", "),
                if extras.is_empty() { "" } else { ", " },
                extras.join(", ")
            ));
        }
        if v.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "The login parameter `{name}` is longer than {MAX_VALUE_BYTES} bytes."
            ));
        }
        let value = match name {
            "prompt" => {
                let words: Vec<&str> = v.split(' ').filter(|w| !w.is_empty()).collect();
                let valid = !words.is_empty()
                    && words.iter().all(|w| PROMPTS.contains(w))
                    && (words.len() == 1 || !words.contains(&"none"));
                if !valid {
                    return Err("The login parameter `prompt` must be none, login, consent or select_account (none alone).".into());
                }
                out.silent = words == ["none"];
                words.join(" ")
            }
            "max_age" => {
                let secs = (!v.is_empty()
                    && v.len() <= 10
                    && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .filter(|s| *s <= MAX_MAX_AGE)
                .ok_or_else(|| {
                    "The login parameter `max_age` must be a number of seconds (0 to 315360000)."
                        .to_owned()
                })?;
                out.max_age = Some(secs);
                secs.to_string()
            }
            "acr_values" => {
                let tokens: Vec<&str> = v.split(' ').filter(|t| !t.is_empty()).collect();
                if tokens.is_empty() || tokens.len() > 8 || !tokens.iter().all(|t| is_acr_token(t))
                {
                    return Err("The login parameter `acr_values` must be up to 8 space-separated values of printable characters.".into());
                }
                let joined = tokens.join(" ");
                out.acr_values = Some(joined.clone());
                joined
            }
            _ => {
                // login_hint, ui_locales and extras: printable text, no
                // controls (an e-mail address, a user name, language tags).
                if v.is_empty() || v.chars().any(char::is_control) {
                    return Err(format!(
                        "The login parameter `{name}` must be non-empty printable text."
                    ));
                }
                if name == "ui_locales"
                    && !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b' ')
                {
                    return Err("The login parameter `ui_locales` must be space-separated language tags (en-US fr).".into());
                }
                v.into_owned()
            }
        };
        out.params.push((name.to_owned(), value));
    }
    Ok(out)
}

/// A parameter name as shown in an error: letters, digits, `_` and `-`,
/// at most 40 of them.
fn shown(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(40)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_parameters_are_kept_in_order_and_normalised() {
        let q = parse(
            Some("return_to=%2Fx&prompt=login&max_age=600&acr_values=mfa++urn%3Ahwk&login_hint=a%40b.c&ui_locales=en-US+fr&audience=api"),
            &["audience".into()],
        )
        .expect("accepted");
        assert_eq!(q.return_to.as_deref(), Some("/x"));
        assert_eq!(q.acr_values.as_deref(), Some("mfa urn:hwk"));
        assert_eq!(q.max_age, Some(600));
        assert!(!q.silent);
        assert_eq!(
            q.params,
            vec![
                ("prompt".into(), "login".into()),
                ("max_age".into(), "600".into()),
                ("acr_values".into(), "mfa urn:hwk".into()),
                ("login_hint".into(), "a@b.c".into()),
                ("ui_locales".into(), "en-US fr".into()),
                ("audience".into(), "api".into()),
            ]
        );
        assert!(parse(Some("prompt=none"), &[]).expect("ok").silent);
        assert_eq!(parse(None, &[]), Ok(LoginQuery::default()));
    }

    #[test]
    fn unknown_repeated_and_out_of_bounds_parameters_are_refused() {
        for q in [
            "acr_value=mfa",
            "audience=api",
            "client_id=evil",
            "redirect_uri=https%3A%2F%2Fevil",
            "prompt=none&prompt=login",
            "return_to=%2Fa&return_to=%2Fb",
            "prompt=none+login",
            "prompt=bogus",
            "prompt=",
            "max_age=-1",
            "max_age=1e3",
            "max_age=99999999999",
            "max_age=",
            "acr_values=",
            "acr_values=a%22b",
            "login_hint=a%0Ab",
            "ui_locales=en%3Bx",
        ] {
            assert!(parse(Some(q), &[]).is_err(), "{q}");
        }
        let long = format!("login_hint={}", "a".repeat(MAX_VALUE_BYTES + 1));
        let e = parse(Some(&long), &[]).expect_err("too long");
        assert!(e.contains("longer than"), "{e}");
        let e = parse(Some("%3Cscript%3E=1"), &[]).expect_err("unknown");
        assert!(!e.contains('<'), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

        #[test]
        fn any_query_is_refused_or_gives_only_bounded_allowlisted_parameters(q in "[a-z_=&%0-9A-F+ ]{0,300}") {
            if let Ok(p) = parse(Some(&q), &["organization".into()]) {
                for (k, v) in &p.params {
                    proptest::prop_assert!(STANDARD.contains(&k.as_str()) || k == "organization", "{k}");
                    proptest::prop_assert!(v.len() <= MAX_VALUE_BYTES && !v.is_empty());
                    proptest::prop_assert!(!v.chars().any(char::is_control));
                }
            }
        }
    }
}
