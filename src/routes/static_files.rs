//! The single-page app, served from `[static] dir` so the app and its API
//! share one origin. Unknown paths without a file extension get
//! `index.html` (client-side routes), except under `/auth/`, the gateway's
//! own namespace; hashed assets are cached for a year, `index.html` never.
//!
//! `ServeDir` answers a directory without a trailing slash with a redirect
//! built from the request URI; the request reaches it in origin form with
//! repeated slashes collapsed, so that redirect is always a path on this
//! origin (never `//host/`, never a client-supplied authority).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::error::AppError;
use crate::security_headers::{ResponseKind, mark};
use crate::state::AppState;
use crate::url_policy::path::{PathRefusal, is_origin_local_path, static_path};

/// A file name with a content hash, as bundlers write them
/// (`app.3f9a2c1b.js`, `index-BxT9sQ2d.css`): safe to cache forever.
fn is_hashed_asset(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let mut parts = name.split(['.', '-']);
    parts.next();
    parts.any(|p| {
        p.len() >= 8
            && p.chars().all(|c| c.is_ascii_alphanumeric())
            && p.chars().any(|c| c.is_ascii_digit())
    })
}

/// The request URI as `ServeDir` may see it: path (repeated slashes
/// collapsed) and query only. Over HTTP/2, or with an absolute-form request
/// line, the URI also carries a scheme and authority the client chose,
/// which `ServeDir` would copy into its redirect.
fn origin_form(uri: &Uri) -> Result<Uri, &'static str> {
    let path = static_path(uri.path()).map_err(|refused| match refused {
        PathRefusal::Backslash => "Paths with backslashes are not served.",
        PathRefusal::ControlCharacter => "Paths with control characters are not served.",
        // `*` (`OPTIONS *` is answered before; any other method with it
        // comes here) or another target that is no path.
        _ => "The request target must be a path starting with /.",
    })?;
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    pq.parse()
        .map_err(|_| "The request path is not a valid URI path.")
}

/// `path` relative to the mount path `base` (`/` for `base` itself), or
/// `None` when it is outside it. An empty `base` keeps every path.
fn under_mount(path: &str, base: &str) -> Option<String> {
    match path.strip_prefix(base) {
        Some("") => Some("/".into()),
        Some(rest) if rest.starts_with('/') => Some(rest.to_owned()),
        _ => None,
    }
}

/// The router's fallback: a path no route matched.
pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let Some(cfg) = &state.config.static_files else {
        return AppError::NotFound.into_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return AppError::NotFound.into_response();
    }
    let mut req = req;
    let base = state.config.server.base_path.as_str();
    let path = match origin_form(req.uri()) {
        Ok(uri) => {
            // Under a mount path only paths under it are the app's, read
            // relative to it (`/app/x.js` is the file `x.js`).
            let Some(path) = under_mount(uri.path(), base) else {
                return AppError::NotFound.into_response();
            };
            let pq = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let Ok(uri) = pq.parse() else {
                return AppError::NotFound.into_response();
            };
            *req.uri_mut() = uri;
            path
        }
        Err(e) => return AppError::BadRequest(e.into()).into_response(),
    };
    // The gateway's own namespace: a mistyped `/auth/...` link gets a 404
    // the app can see, not the app's index.html with a 200.
    if path == "/auth" || path.starts_with("/auth/") {
        return AppError::NotFound.into_response();
    }
    let index = cfg.dir.join("index.html");
    let last = path.rsplit('/').next().unwrap_or_default();
    let client_route = cfg.spa_fallback && !last.contains('.');
    let result = if client_route {
        ServeDir::new(&cfg.dir)
            .append_index_html_on_directories(true)
            .fallback(ServeFile::new(&index))
            .oneshot(req)
            .await
    } else {
        ServeDir::new(&cfg.dir)
            .append_index_html_on_directories(true)
            .oneshot(req)
            .await
    };
    let Ok(resp) = result;
    if resp.status() == axum::http::StatusCode::NOT_FOUND {
        return AppError::NotFound.into_response();
    }
    // Belt and braces: whatever `ServeDir` redirects to stays on this origin.
    if resp
        .headers()
        .get(header::LOCATION)
        .is_some_and(|l| !l.to_str().is_ok_and(is_origin_local_path))
    {
        return AppError::NotFound.into_response();
    }
    let mut resp = resp.map(axum::body::Body::new);
    // `ServeDir` built its redirect from the path it saw, without the mount.
    if !base.is_empty()
        && let Some(l) = resp.headers().get(header::LOCATION)
        && let Ok(moved) = HeaderValue::from_str(&format!("{base}{}", l.to_str().unwrap_or("/")))
    {
        resp.headers_mut().insert(header::LOCATION, moved);
    }
    let cache = if resp.status().is_success() && is_hashed_asset(&path) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    mark(resp, ResponseKind::StaticApp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_the_mount_path_are_the_apps() {
        assert_eq!(under_mount("/x.js", "").as_deref(), Some("/x.js"));
        assert_eq!(under_mount("/app", "/app").as_deref(), Some("/"));
        assert_eq!(under_mount("/app/", "/app").as_deref(), Some("/"));
        assert_eq!(under_mount("/app/a/b", "/app").as_deref(), Some("/a/b"));
        assert_eq!(under_mount("/apps/a", "/app"), None);
        assert_eq!(under_mount("/", "/app"), None);
    }

    #[test]
    fn hashed_assets_are_recognised() {
        assert!(is_hashed_asset("/assets/index-BxT9sQ2d.js"));
        assert!(is_hashed_asset("/app.3f9a2c1b.css"));
        assert!(!is_hashed_asset("/app.js"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/assets/component-library.js"));
    }
}
