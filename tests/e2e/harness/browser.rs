//! The scripted browser: the gateway's cookies kept by hand (so tests can
//! tamper with them), a cookie-jar client that walks the provider's login
//! pages, and the small HTML and URL helpers that walk needs. It knows the
//! gateway only by its base URL.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Gateway;

/// A scripted browser: its own cookies for the gateway (kept by hand, so
/// tests can tamper with them) and a cookie-jar client for the provider.
pub struct Browser {
    pub gw: reqwest::Client,
    pub idp: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    pub base: String,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.body)
    }
}

/// A client that shows redirects to the test instead of following them.
pub(super) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Finds the first `<form ... action="...">` and the named inputs in a page.
pub fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let action = &form[form.find("action=\"")? + 8..];
    Some(action[..action.find('"')?].replace("&amp;", "&"))
}

pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in html.split("<input").skip(1) {
        let tag = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        if !tag.contains("type=\"hidden\"") {
            continue;
        }
        let attr = |name: &str| {
            let pat = format!("{name}=\"");
            tag.find(&pat).map(|i| {
                let rest = &tag[i + pat.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].replace("&amp;", "&")
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

fn absolutize(base: &str, location: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(location))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| location.to_owned())
}

impl Browser {
    pub fn new(gw: &Gateway) -> Self {
        Self::trusting(gw, None)
    }

    /// A browser that also trusts the CA in `ca_pem` (a provider behind a
    /// private CA).
    pub fn trusting(gw: &Gateway, ca_pem: Option<&[u8]>) -> Self {
        let mut idp = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .timeout(Duration::from_secs(20));
        if let Some(pem) = ca_pem {
            idp = idp.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA PEM"));
        }
        let idp = idp.build().expect("client");
        Self {
            gw: no_redirects(),
            idp,
            cookies: BTreeMap::new(),
            base: gw.base.clone(),
        }
    }

    fn absorb(&mut self, headers: &HeaderMap) {
        for v in headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let pair = v.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = v.to_ascii_lowercase().contains("max-age=0");
            if expired || value.is_empty() {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.cookies.get("__Host-oidc-bff").cloned()
    }

    /// A request to the gateway with this browser's cookies.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.gw.request(method, &url);
        if !self.cookies.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        self.absorb(&headers);
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], None).await
    }

    /// A browser navigation (asks for HTML, like a real one).
    pub async fn navigate(&mut self, path: &str) -> Resp {
        self.request(
            Method::GET,
            path,
            &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
            None,
        )
        .await
    }

    /// `GET /auth/login`, returning the provider authorization URL.
    /// A whole login as alice's browser sees it, keeping what the secret
    /// scans look for: the login cookies, the authorization code and state.
    pub async fn login_revealing(
        &mut self,
        return_to: &str,
        user: &str,
        password: &str,
    ) -> LoginSecrets {
        let authorize = self.start_login(return_to).await;
        let login_cookies: Vec<String> = self.cookies.values().cloned().collect();
        let callback = self.authenticate(&authorize, user, password).await;
        let url = url::Url::parse(&callback).expect("callback URL");
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("no {name} in {callback}"))
        };
        let (code, state) = (param("code"), param("state"));
        assert_eq!(self.callback(&callback).await.status, StatusCode::SEE_OTHER);
        LoginSecrets {
            login_cookies,
            code,
            state,
        }
    }

    pub async fn start_login(&mut self, return_to: &str) -> String {
        let r = self
            .navigate(&format!("/auth/login?return_to={}", urlencode(return_to)))
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "login start: {r:?}");
        r.location().expect("authorization URL")
    }

    /// Walks the provider's pages from the authorization URL until it
    /// redirects back to the gateway; returns that callback URL.
    pub async fn authenticate(
        &mut self,
        authorize_url: &str,
        user: &str,
        password: &str,
    ) -> String {
        let mut url = authorize_url.to_owned();
        for _ in 0..12 {
            if url.starts_with(&self.base) {
                return url;
            }
            let r = self
                .idp
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = r.status();
            if let Some(loc) = r.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                url = absolutize(&url, loc);
                continue;
            }
            let html = r.text().await.unwrap_or_default();
            assert!(status.is_success(), "provider page {url}: {status} {html}");
            let action = absolutize(
                &url,
                &form_action(&html).unwrap_or_else(|| panic!("no form on {url}: {html}")),
            );
            let mut fields = hidden_inputs(&html);
            if html.contains("name=\"password\"") {
                fields.push(("login".into(), user.into()));
                fields.push(("password".into(), password.into()));
            }
            let r = self
                .idp
                .post(&action)
                .form(&fields)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {action}: {e}"));
            let status = r.status();
            match r.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                Some(loc) => url = absolutize(&action, loc),
                None => panic!(
                    "form post to {action} did not redirect: {status} {}",
                    r.text().await.unwrap_or_default()
                ),
            }
        }
        panic!("provider did not redirect back to the gateway; last URL {url}");
    }

    /// Completes a callback URL at the gateway.
    pub async fn callback(&mut self, callback_url: &str) -> Resp {
        self.navigate(callback_url).await
    }

    /// The whole login; asserts it succeeded.
    /// A whole login; the gateway's answer where it stopped (the login
    /// start if that failed, else the callback), whatever it is.
    pub async fn try_login(&mut self, user: &str, password: &str) -> Resp {
        let start = self.navigate("/auth/login?return_to=%2Fapp").await;
        let Some(authorize) = start
            .location()
            .filter(|_| start.status == StatusCode::SEE_OTHER)
        else {
            return start;
        };
        let cb = self.authenticate(&authorize, user, password).await;
        self.callback(&cb).await
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Resp {
        let r = self.try_login(user, password).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "callback: {r:?}");
        assert!(
            self.session_cookie().is_some(),
            "no session cookie after login: {r:?}"
        );
        r
    }

    /// Logs in as a user of this test's own (the provider accepts any
    /// lowercase name with password "<name>-password").
    pub async fn login_as(&mut self, user: &str) -> Resp {
        self.login(user, &format!("{user}-password")).await
    }

    /// The provider's session ID (`sid`) of this browser's session, as
    /// `/auth/user` shows it: what a back- or front-channel logout names.
    pub async fn provider_sid(&mut self) -> String {
        self.get("/auth/user").await.json()["claims"]["sid"]
            .as_str()
            .expect("the ID token carried the provider sid")
            .to_owned()
    }

    pub async fn login_alice(&mut self) -> Resp {
        self.login("alice", "alice-password").await
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What a login revealed to the browser, for tests that scan logs, traces
/// or stores for secrets ([`Browser::login_revealing`]).
pub struct LoginSecrets {
    pub login_cookies: Vec<String>,
    pub code: String,
    pub state: String,
}
