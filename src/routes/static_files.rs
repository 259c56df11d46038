//! The single-page app, served from `[static] dir` so the app and its API
//! share one origin. Unknown paths without a file extension get
//! `index.html` (client-side routes) when a browser may be navigating
//! there, except under the gateway's own namespaces (`/auth/`, `/healthz`,
//! `/readyz`); hashed assets are cached for a year, `index.html` never.
//!
//! Only what a built app publishes is served: no hidden files (`.env`,
//! `.git/`), nothing a symlink inside the directory leads to outside it,
//! nothing but regular files (a FIFO would hold a thread), no name longer
//! than a file system keeps. Each is a 404, decided on the
//! path as `ServeDir` decodes it, before it opens anything.
//!
//! `ServeDir` answers a directory without a trailing slash with a redirect
//! built from the request URI; the request reaches it in origin form with
//! repeated slashes collapsed, so that redirect is always a path on this
//! origin (never `//host/`, never a client-supplied authority).

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::{OWN_PREFIXES, StaticConfig};
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

/// The longest file name (one decoded segment) and the longest decoded
/// path looked up: no file system keeps longer names (255 bytes) or paths
/// (Linux's `PATH_MAX`), and asking for one fails with `ENAMETOOLONG`,
/// which `ServeDir` answers with an empty 500.
const MAX_NAME_BYTES: usize = 255;
const MAX_PATH_BYTES: usize = 4096;

/// Why a path is not looked up in the app's directory: each is a 404, a
/// file the app does not publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotPublished {
    /// `%`-escapes that do not decode to UTF-8 (overlong `%c0%ae`), or a
    /// decoded control character (`%00`).
    Undecodable,
    /// A segment starting with `.` once decoded: `.env`, `.git/config`,
    /// `.htpasswd`, `sub%2f.env`, and the `.`/`..` that `%2e` spells.
    /// Build tools never publish these; editors, VCS and deploy tools
    /// leave them behind. `/.well-known/` (RFC 8615) is the one exception.
    Hidden,
    /// A name or path longer than a file system keeps.
    TooLong,
}

/// The segments of `path` (under the app's directory) as `ServeDir` reads
/// it — the whole path percent-decoded once, then split on `/`, empty
/// segments dropped — or why it is not looked up.
fn published_segments(path: &str) -> Result<Vec<String>, NotPublished> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| NotPublished::Undecodable)?;
    if decoded.chars().any(char::is_control) {
        return Err(NotPublished::Undecodable);
    }
    if decoded.len() > MAX_PATH_BYTES {
        return Err(NotPublished::TooLong);
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment.len() > MAX_NAME_BYTES {
            return Err(NotPublished::TooLong);
        }
        if segment.starts_with('.') && !(segments.is_empty() && segment == ".well-known") {
            return Err(NotPublished::Hidden);
        }
        segments.push(segment.to_owned());
    }
    Ok(segments)
}

/// Why a file that exists is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unservable {
    /// Its real path is outside `static.dir`: reached through a symlink
    /// inside it that points out.
    Outside,
    /// Not a regular file: a FIFO (opening one blocks a thread until a
    /// writer comes, and every request for it takes another), a socket,
    /// a device.
    NotAFile,
}

/// Whether the file `ServeDir` would open for `segments` (a directory's
/// `index.html` for a directory) may be served. A path that resolves to
/// nothing may (`ServeDir` answers it, or falls back); only its metadata
/// is read here, nothing is opened.
async fn servable(dir: &Path, segments: &[String]) -> Result<(), Unservable> {
    let Ok(root) = tokio::fs::canonicalize(dir).await else {
        return Ok(());
    };
    let judge = |real: &PathBuf, meta: &std::fs::Metadata| {
        if !real.starts_with(&root) {
            Err(Unservable::Outside)
        } else if !meta.is_file() && !meta.is_dir() {
            Err(Unservable::NotAFile)
        } else {
            Ok(())
        }
    };
    let mut path = root.clone();
    path.extend(segments);
    let Ok(real) = tokio::fs::canonicalize(&path).await else {
        return Ok(());
    };
    let Ok(meta) = tokio::fs::metadata(&real).await else {
        return Ok(());
    };
    judge(&real, &meta)?;
    if meta.is_dir() {
        let index = real.join("index.html");
        if let Ok(real) = tokio::fs::canonicalize(&index).await
            && let Ok(meta) = tokio::fs::metadata(&real).await
        {
            judge(&real, &meta)?;
            if meta.is_dir() {
                return Err(Unservable::NotAFile);
            }
        }
    }
    Ok(())
}

/// Whether `Range` may reach `ServeDir`: exactly one header holding one
/// well-formed byte range (`bytes=0-99`, `bytes=100-`, `bytes=-500`), and
/// no `If-Range`. Anything else is ignored, as RFC 9110 §14.2 has it (a
/// server may always ignore `Range`; it must ignore an unknown unit or an
/// invalid range), and the whole file is sent: `ServeDir` answered an
/// unknown unit (`items=0-5`), an invalid range (`bytes=5-1`) or several
/// ranges (which it does not serve: what PDF viewers ask for) with 416,
/// and a `Range` whose `If-Range` it cannot judge with a part of a file
/// that may have changed.
fn range_usable(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::IF_RANGE) {
        return false;
    }
    let mut ranges = headers.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return false;
    };
    let Some((unit, spec)) = range.to_str().ok().and_then(|r| r.split_once('=')) else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    let Some((first, last)) = spec.trim().split_once('-') else {
        return false;
    };
    unit.trim().eq_ignore_ascii_case("bytes")
        && match (first, last) {
            ("", suffix) => number(suffix),
            (first, "") => number(first),
            (first, last) => {
                number(first)
                    && number(last)
                    && first.parse::<u64>().ok() <= last.parse::<u64>().ok()
            }
        }
}

/// Whether a request for a client-side route may get `index.html`: a
/// browser navigation, or a client that does not say it is none. A
/// `fetch`/XHR (`Sec-Fetch-Mode` other than `navigate`, or
/// `X-Requested-With`) or a client that takes no HTML (`Accept:
/// application/json`) gets a 404 it can read, not the app's page with a 200
/// it would try to parse as its answer.
fn may_get_the_app(headers: &HeaderMap) -> bool {
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode == "navigate";
    }
    if headers.contains_key("x-requested-with") {
        return false;
    }
    let mut accepts = headers.get_all(header::ACCEPT).iter().peekable();
    if accepts.peek().is_none() {
        return true;
    }
    accepts
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|range| range.split(';').next().unwrap_or_default().trim())
        .any(|range| {
            ["text/html", "application/xhtml+xml", "text/*", "*/*"]
                .iter()
                .any(|html| range.eq_ignore_ascii_case(html))
        })
}

/// The router's fallback: a path no route matched.
pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let Some(cfg) = &state.config.static_files else {
        return AppError::NotFound.into_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return AppError::NotFound.into_response();
    }
    let base = state.config.server.base_path.as_str();
    let (req, path) = match under_the_mount(req, base) {
        Ok(relative) => relative,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = published(cfg, &path).await {
        return refused.into_response();
    }
    let resp = look_up(cfg, req, &path).await;
    finish(resp, cfg, base, &path)
}

/// The request with its URI relative to the mount path (`/app/x.js` asks
/// for the file `x.js`), and that path; under a mount path only paths
/// under it are the app's.
fn under_the_mount(mut req: Request, base: &str) -> Result<(Request, String), AppError> {
    let uri = origin_form(req.uri()).map_err(|e| AppError::BadRequest(e.into()))?;
    let path = under_mount(uri.path(), base).ok_or(AppError::NotFound)?;
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    *req.uri_mut() = pq.parse().map_err(|_| AppError::NotFound)?;
    Ok((req, path))
}

/// `Ok` when `path` names something the app publishes, else its 404: not
/// a hidden, undecodable or over-long name ([`published_segments`]), not
/// the gateway's own namespaces in any spelling (`/%61uth/x` reads as
/// `/auth/x`: a mistyped `/auth/...` link, or a probe of `/readyz/`, gets a
/// 404 rather than the app's index.html with a 200), and a regular file
/// inside `static.dir` ([`servable`]).
async fn published(cfg: &StaticConfig, path: &str) -> Result<(), AppError> {
    let segments = published_segments(path).map_err(|why| {
        tracing::info!(reason = ?why, "static app: path not published");
        AppError::NotFound
    })?;
    let decoded = format!("/{}", segments.join("/"));
    if OWN_PREFIXES
        .iter()
        .any(|own| crate::url_policy::path::path_has_prefix(&decoded, own))
    {
        return Err(AppError::NotFound);
    }
    servable(&cfg.dir, &segments).await.map_err(|why| {
        tracing::warn!(reason = ?why, "static app: a file in static.dir is not served (a symlink out of it, or not a regular file)");
        AppError::NotFound
    })
}

/// `ServeDir`'s answer for `req`: the file, a directory's `index.html`,
/// or for a client route (no extension, a request that may be a
/// navigation) the app's `index.html`. A `Range` it cannot honour is
/// dropped first, so the whole file is sent (RFC 9110 §14.2).
async fn look_up(cfg: &StaticConfig, mut req: Request, path: &str) -> Response {
    if req.headers().contains_key(header::RANGE) && !range_usable(req.headers()) {
        req.headers_mut().remove(header::RANGE);
    }
    // The last segment as `ServeDir` reads it: `/app%2ejs` names a file.
    let last = path.rsplit('/').next().unwrap_or_default();
    let client_route = cfg.spa_fallback
        && !percent_encoding::percent_decode_str(last)
            .decode_utf8_lossy()
            .contains('.')
        && may_get_the_app(req.headers())
        && servable(&cfg.dir, &["index.html".to_owned()]).await.is_ok();
    let files = ServeDir::new(&cfg.dir).append_index_html_on_directories(true);
    let result = if client_route {
        files
            .fallback(ServeFile::new(cfg.dir.join("index.html")))
            .oneshot(req)
            .await
    } else {
        files.oneshot(req).await
    };
    let Ok(resp) = result;
    resp.map(axum::body::Body::new)
}

/// `ServeDir`'s answer as the gateway sends it: its 404 and any other
/// error (an empty 500 for an I/O error) as the gateway's own answers, a
/// redirect kept on this origin and under the mount path, the app's
/// content security policy on HTML, and the caching rule (hashed assets
/// for a year, everything else revalidated).
fn finish(mut resp: Response, cfg: &StaticConfig, base: &str, path: &str) -> Response {
    if resp.status() == StatusCode::NOT_FOUND {
        return AppError::NotFound.into_response();
    }
    if resp.status().is_server_error() {
        return AppError::Internal("a static file could not be read".into()).into_response();
    }
    // Belt and braces: whatever `ServeDir` redirects to stays on this origin.
    if resp
        .headers()
        .get(header::LOCATION)
        .is_some_and(|l| !l.to_str().is_ok_and(is_origin_local_path))
    {
        return AppError::NotFound.into_response();
    }
    // `ServeDir` built its redirect from the path it saw, without the mount.
    if !base.is_empty()
        && let Some(l) = resp.headers().get(header::LOCATION)
        && let Ok(moved) = HeaderValue::from_str(&format!("{base}{}", l.to_str().unwrap_or("/")))
    {
        resp.headers_mut().insert(header::LOCATION, moved);
    }
    if let Some(policy) = &cfg.content_security_policy
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
    {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy.clone());
    }
    let cache = if resp.status().is_success() && is_hashed_asset(path) {
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
    fn only_published_names_are_looked_up() {
        let ok = |p: &str| published_segments(p).expect(p);
        assert_eq!(ok("/"), Vec::<String>::new());
        assert_eq!(ok("/assets//app.js"), ["assets", "app.js"]);
        assert_eq!(ok("/caf%C3%A9/a%20b.txt"), ["café", "a b.txt"]);
        assert_eq!(
            ok("/.well-known/security.txt"),
            [".well-known", "security.txt"]
        );
        assert_eq!(ok("/app..js"), ["app..js"]);
        for (path, why) in [
            ("/.env", NotPublished::Hidden),
            ("/%2eenv", NotPublished::Hidden),
            ("/sub%2F.env", NotPublished::Hidden),
            ("/.git/config", NotPublished::Hidden),
            ("/a/.well-known/x", NotPublished::Hidden),
            ("/./x", NotPublished::Hidden),
            ("/%2e%2e/x", NotPublished::Hidden),
            ("/..%2fx", NotPublished::Hidden),
            ("/%c0%ae%c0%ae/x", NotPublished::Undecodable),
            ("/x%00.js", NotPublished::Undecodable),
            ("/x%0a", NotPublished::Undecodable),
        ] {
            assert_eq!(published_segments(path), Err(why), "{path}");
        }
        let name = "n".repeat(MAX_NAME_BYTES);
        assert!(published_segments(&format!("/{name}")).is_ok());
        assert_eq!(
            published_segments(&format!("/{name}n")),
            Err(NotPublished::TooLong)
        );
        assert_eq!(
            published_segments(&"/abc".repeat(MAX_PATH_BYTES / 4 + 1)),
            Err(NotPublished::TooLong)
        );
    }

    #[test]
    fn only_one_well_formed_byte_range_reaches_serve_dir() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            range_usable(&h)
        };
        for ok in [
            "bytes=0-99",
            "bytes=100-",
            "bytes=-500",
            "Bytes=0-0",
            "bytes=7-7",
        ] {
            assert!(with(&[("range", ok)]), "{ok}");
        }
        for ignored in [
            "items=0-5",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "bytes=0-1, 0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=0-99999999999999999999",
            "bytes 0-1",
            "bytes=--1",
            "",
        ] {
            assert!(!with(&[("range", ignored)]), "{ignored}");
        }
        assert!(!with(&[("range", "bytes=0-1"), ("range", "bytes=2-3")]));
        assert!(!with(&[("range", "bytes=0-1"), ("if-range", "garbage")]));
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
