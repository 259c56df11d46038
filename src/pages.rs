//! HTML pages the gateway renders itself (errors, logged out), and the
//! middleware that turns an error into a page when a browser navigated to
//! the URL (API and XHR callers keep the JSON).
//!
//! Templates live in `templates/` and are compiled into the binary. Pages
//! carry a strict CSP (no scripts at all; the one stylesheet allowed by its
//! hash), `frame-ancestors 'none'`, `nosniff` and `no-referrer`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use minijinja::{Environment, context};
use sha2::{Digest, Sha256};

use crate::error::ErrorInfo;
use crate::security_headers::{self, ResponseKind};

const CSS: &str = include_str!("../templates/style.css");

/// The icon the pages link to (so browsers stop asking for a
/// `/favicon.ico` the gateway does not have).
const FAVICON: &str = include_str!("../templates/favicon.svg");

pub struct Pages {
    env: Environment<'static>,
    csp: HeaderValue,
}

impl Pages {
    pub fn new() -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.add_template("base.html", include_str!("../templates/base.html"))?;
        env.add_template("error.html", include_str!("../templates/error.html"))?;
        env.add_template(
            "logged_out.html",
            include_str!("../templates/logged_out.html"),
        )?;
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
        let csp = HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        ))?;
        env.add_global("base", "");
        env.add_global("base_q", "");
        Ok(Self { env, csp })
    }

    /// Pages whose links (login, start page, icon) are under the mount
    /// path `base` (`server.public_url`'s path; empty for none). `base` is
    /// a plain path (letters, digits, `-_.~/`), so it needs no escaping in
    /// HTML; in a query value its slashes are encoded.
    pub fn with_base_path(mut self, base: &str) -> Self {
        self.env.add_global("base", base.to_owned());
        self.env.add_global("base_q", base.replace('/', "%2F"));
        self
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }

    /// A page with its headers: the content security policy (this
    /// module's, as it hashes the stylesheet) and the page policy of
    /// `security_headers`, marked so the layer keeps it.
    fn page(&self, status: StatusCode, html: String) -> Response {
        let mut resp = (status, Html(html)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        security_headers::secure(ResponseKind::Page, resp.headers_mut());
        security_headers::mark(resp, ResponseKind::Page)
    }

    pub fn error_page(&self, info: &ErrorInfo, request_id: Option<&str>) -> Response {
        let status = StatusCode::from_u16(info.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let html = self
            .render(
                "error.html",
                context! {
                    css => CSS, title => info.title, message => info.message, code => info.code,
                    status => info.status, relogin => info.relogin, request_id => request_id,
                    login_url => info.login_url,
                },
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "error page template failed");
                format!(
                    "<!doctype html><title>Error</title><p>Error {}</p>",
                    info.status
                )
            });
        self.page(status, html)
    }

    pub fn logged_out(&self) -> Response {
        match self.render(
            "logged_out.html",
            context! { css => CSS, title => "Logged out" },
        ) {
            Ok(html) => self.page(StatusCode::OK, html),
            Err(e) => {
                tracing::error!(error = %e, "logged-out template failed");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// `GET /auth/favicon.svg`: the pages' icon. Static and script-free; its
/// own CSP forbids anything an SVG could load or run.
pub async fn favicon() -> Response {
    let mut resp = FAVICON.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    resp
}

/// Whether the request is a browser navigation (answer with a page) rather
/// than an API or XHR call (answer with JSON).
pub fn is_navigation(headers: &HeaderMap) -> bool {
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode == "navigate";
    }
    if headers.contains_key("x-requested-with") {
        return false;
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation_is_told_from_api_calls() {
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(is_navigation(&h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert!(
            !is_navigation(&h),
            "fetch() from a page is not a navigation"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(is_navigation(&h), "old browsers without Sec-Fetch-*");
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!is_navigation(&h));
        assert!(
            !is_navigation(&HeaderMap::new()),
            "curl and API clients get JSON"
        );
    }

    #[tokio::test]
    async fn error_pages_escape_and_carry_security_headers() {
        let pages = Pages::new().expect("templates");
        let resp = pages.error_page(
            &ErrorInfo {
                status: 400,
                code: "login_failed",
                title: "Sign-in failed",
                message: "<script>x</script>".into(),
                relogin: true,
                login_url: None,
            },
            Some("req-1"),
        );
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp")
            .to_owned();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let html = String::from_utf8_lossy(&body);
        assert!(!html.contains("<script>"), "message must be escaped");
        assert!(html.contains("/auth/login"), "offers to log in again");
    }
}
