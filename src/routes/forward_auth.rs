//! The forward-auth endpoint (`[forward_auth]`, `GET /auth/verify` by
//! default): a front proxy (nginx `auth_request`, Caddy `forward_auth`,
//! HAProxy, Traefik, Envoy) asks whether the request it holds may go
//! through, and the gateway answers with the same rules its own proxied
//! routes apply: the same session extractors, the same path rule
//! (`url_policy::path`), the route's auth and CSRF rule, the same refresh.
//!
//! - 200: allowed; `Authorization: Bearer …` (the route's token, decided
//!   by `proxy::token` as for proxied requests) and the
//!   `X-Auth-Request-*` identity headers for the proxy to copy onto the
//!   upstream request. Never to be passed to the browser.
//! - 401: no (live) session; on a browser navigation `X-Auth-Login-Url`
//!   names where to send it (nginx: `error_page 401 = @login`).
//! - 403: CSRF header missing on an unsafe original method, or the caller
//!   is not a trusted proxy. 400: no or an ambiguous original URI.
//!
//! It owns only the reading of the proxy's request and the shape of the
//! answer; sessions, refresh and routes belong to their modules.

use axum::extract::{FromRequestParts as _, Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::RouteAuth;
use crate::error::AppError;
use crate::extract::client::peer_ip;
use crate::extract::session::{CurrentSession, MaybeSession, SessionRejection};
use crate::middleware::csrf::is_state_changing;
use crate::pages::is_navigation;
use crate::session::Session;
use crate::state::AppState;
use crate::url_policy::path::check_request_path;

/// Where a browser without a session is sent, on 401.
pub const LOGIN_URL_HEADER: &str = "x-auth-login-url";

/// The request the front proxy is holding, as it describes it.
struct Original {
    method: Method,
    uri: PathAndQuery,
}

/// Reads the original method and URI: `X-Forwarded-Method`/`-Uri`
/// (Traefik, Caddy, the HAProxy Lua script) or `X-Original-Method`/`-URI`
/// (nginx `auth_request`). Without a method header the subrequest's own
/// method stands (nginx's subrequest keeps the original method).
/// Envoy's `ext_authz` names no headers: it appends the original path and
/// query to the endpoint's path (`suffix`) and keeps the method.
///
/// A proxy sets its own convention and passes the client's other headers
/// on, so a client could add the other convention's header to name a
/// different request: when both are present they must agree (else 400).
fn original(headers: &HeaderMap, own: &Method, suffix: Option<&str>) -> Result<Original, AppError> {
    let conflict = || {
        AppError::BadRequest(
            "The original request is named more than once, differently (a repeated \
             X-Forwarded-Method/-Uri or X-Original-Method/-URI, the two conventions, or the \
             endpoint's path beside them)."
                .into(),
        )
    };
    let first = |names: [&str; 2]| -> Result<Option<&HeaderValue>, AppError> {
        let mut values = names.iter().filter_map(|n| {
            let mut all = headers.get_all(*n).iter();
            let v = all.next()?;
            Some(if all.next().is_some() { None } else { Some(v) })
        });
        let Some(a) = values.next() else {
            return Ok(None);
        };
        let a = a.ok_or_else(conflict)?;
        match values.next() {
            Some(Some(b)) if b != a => Err(conflict()),
            Some(None) => Err(conflict()),
            _ => Ok(Some(a)),
        }
    };
    let missing = || {
        AppError::BadRequest(
            "The front proxy must send the original URI (X-Forwarded-Uri or X-Original-URI)."
                .into(),
        )
    };
    let named = first(["x-forwarded-uri", "x-original-uri"])?;
    let uri = match (named, suffix) {
        (Some(_), Some(_)) => return Err(conflict()),
        (Some(v), None) => v.to_str().ok(),
        (None, Some(s)) => Some(s),
        (None, None) => None,
    }
    .filter(|s| s.starts_with('/'))
    .ok_or_else(missing)?;
    let uri = PathAndQuery::try_from(uri).map_err(|_| missing())?;
    let method = match first(["x-forwarded-method", "x-original-method"])? {
        Some(v) => Method::from_bytes(v.as_bytes())
            .map_err(|_| AppError::BadRequest("The original method is malformed.".into()))?,
        None => own.clone(),
    };
    Ok(Original { method, uri })
}

/// The endpoint. Short by design: each step is the rule the proxied routes
/// already apply, in their order (guard, CSRF, session, refresh, policy).
pub async fn verify(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    match decide(&state, &mut parts).await {
        Ok(resp) | Err(resp) => resp,
    }
}

async fn decide(state: &AppState, parts: &mut Parts) -> Result<Response, Response> {
    // Only the proxy may ask: the answer carries the access token, and the
    // original method and URI are believed only from it.
    if !state.client_address.trusts(peer_ip(parts)) {
        return Err(AppError::Forbidden(
            "Forward-auth answers only the configured trusted proxies.".into(),
        )
        .into_response());
    }
    let suffix = envoy_suffix(state, &parts.uri);
    let orig = original(&parts.headers, &parts.method, suffix.as_deref())
        .map_err(IntoResponse::into_response)?;
    if crate::method::names_refused_method(&orig.method, &parts.headers) {
        return Err(AppError::MethodNotAllowed.into_response());
    }
    if let Err(refusal) = check_request_path(orig.uri.path()) {
        tracing::info!(reason = ?refusal, "forward-auth: original path refused");
        return Err(AppError::BadRequest(refusal.message().into()).into_response());
    }
    // The route of the path the upstream will serve: a spelling that some
    // upstream reads as another route's is refused, not decided by the
    // route (or the default) its exact spelling falls under.
    let route = state.routes.resolve(orig.uri.path()).map_err(|refusal| {
        tracing::info!(reason = ?refusal, "forward-auth: original path refused");
        AppError::BadRequest(refusal.message().into()).into_response()
    })?;
    let default_auth = state
        .config
        .forward_auth
        .as_ref()
        .map_or(RouteAuth::Required, |f| f.default_auth);
    let auth = route.map_or(default_auth, |r| r.auth);
    if auth == RouteAuth::None {
        let token = token_for(state, parts, route, None).await?;
        return Ok(allowed(None, token));
    }
    if (is_state_changing(&orig.method) || crate::method::overridden(&parts.headers))
        && !state.csrf.satisfied_by(&parts.headers)
    {
        return Err(AppError::CsrfRejected.into_response());
    }
    // As the proxied routes' guard: a browser sends no CSRF header on a
    // WebSocket handshake, so one from another origin is refused. Proxies
    // rewrite `Connection`, so the `Upgrade` header alone marks it.
    if parts.headers.contains_key(header::UPGRADE)
        && !state.forwarder.from_own_origin(&parts.headers)
    {
        return Err(AppError::Forbidden(
            "WebSocket handshakes must come from this application's own origin.".into(),
        )
        .into_response());
    }
    let session = if auth == RouteAuth::Required {
        match CurrentSession::from_request_parts(parts, state).await {
            Ok(CurrentSession(s)) => Some(s),
            Err(rejection) => return Err(unauthenticated(state, &parts.headers, rejection, &orig)),
        }
    } else {
        let MaybeSession(s) = MaybeSession::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        s
    };
    let Some(session) = session else {
        let token = token_for(state, parts, route, None).await?;
        return Ok(allowed(None, token));
    };
    let session = state
        .refresher
        .fresh(
            session,
            crate::clock::unix_now(),
            crate::audit::Origin::of_parts(parts),
        )
        .await
        // A refused refresh ends the session: a 401, sent to log in too.
        .map_err(|e| {
            with_login_url(
                state,
                &parts.headers,
                AppError::from(e).into_response(),
                &orig,
            )
        })?;
    if let Some(r) = route
        // The step-up comes back to the page the proxy was asked for.
        && let Err(refused) = r.admit(&session, login_return_to(state, &orig))
    {
        use crate::audit::{Action, Event, Origin};
        state.audit.record(
            Origin::of_parts(parts),
            Event::failure(Action::PolicyRefusal, refused.audit_refusal())
                .route(&r.path)
                .session(&session.store_id)
                .user(&crate::audit::subject(&session)),
        );
        return Err(refused.into_response());
    }
    // As the proxy: a token that cannot be a header is an error, never a
    // 200 that lets the request through without it.
    if session.bearer_header().is_err() {
        return Err(
            AppError::Internal("access token is not a valid header value".into()).into_response(),
        );
    }
    // The route's identity headers and assertion, as the proxy would send.
    let identity = match route {
        Some(r) => state
            .forwarder
            .identity_for(r, &session, crate::clock::unix_now())
            .map_err(IntoResponse::into_response)?,
        None => Vec::new(),
    };
    // Claims that do not read refuse the session (401), never a 200
    // without the user's headers.
    let claims = session
        .claims()
        .map_err(|e| AppError::from(e).into_response())?;
    let token = token_for(state, parts, route, Some(&session)).await?;
    let mut resp = allowed(Some(&claims), token);
    for (name, value) in identity {
        resp.headers_mut().insert(name, value);
    }
    Ok(resp)
}

/// What follows the endpoint's own path (`/auth/verify/api/x?a=1` →
/// `/api/x?a=1`): how Envoy names the original request.
fn envoy_suffix(state: &AppState, uri: &http::Uri) -> Option<String> {
    let own = state
        .config
        .forward_auth
        .as_ref()?
        .path
        .trim_end_matches('/');
    let rest = uri.path().strip_prefix(own)?;
    if !rest.starts_with('/') || rest == "/" {
        return None;
    }
    Some(match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    })
}

/// 200, with the token and identity for the upstream when there is a
/// session.
/// The token the front proxy is to send upstream: the route's (`token`,
/// decided as for proxied requests), or the session's where no route
/// matches.
async fn token_for(
    state: &AppState,
    parts: &Parts,
    route: Option<&crate::proxy::routes::Route>,
    session: Option<&Session>,
) -> Result<Option<HeaderValue>, Response> {
    match route {
        Some(r) => state
            .forwarder
            .token_for(r, session, crate::audit::Origin::of_parts(parts))
            .await
            .map_err(IntoResponse::into_response),
        None => Ok(session.and_then(|s| s.bearer_header().ok())),
    }
}

fn allowed(
    claims: Option<&serde_json::Map<String, serde_json::Value>>,
    token: Option<HeaderValue>,
) -> Response {
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = token {
        h.insert(header::AUTHORIZATION, v);
    }
    let Some(claims) = claims else {
        return resp;
    };
    for (name, claim) in [
        ("x-auth-request-user", "sub"),
        ("x-auth-request-email", "email"),
        ("x-auth-request-preferred-username", "preferred_username"),
    ] {
        // The rule of the routes' identity headers: a value that is not
        // header-safe (a control, whitespace at an end, too long) is left
        // out rather than altered.
        let Some(value) = claims.get(claim).filter(|v| v.is_string()) else {
            continue;
        };
        match crate::identity::header_value(value) {
            Some(v) => {
                h.insert(HeaderName::from_static(name), v);
            }
            None => {
                tracing::warn!(
                    header = name,
                    claim,
                    "claim is not header-safe; identity header not sent"
                );
            }
        }
    }
    resp
}

/// The session's refusal (401, or 503 on a store failure), sent to log in
/// when it is a 401 to a browser navigation.
fn unauthenticated(
    state: &AppState,
    headers: &HeaderMap,
    rejection: SessionRejection,
    orig: &Original,
) -> Response {
    with_login_url(state, headers, rejection.into_response(), orig)
}

/// The original URI as the `return_to` of a login, when `/auth/login`
/// will accept it (`url_policy::return_to`: length, characters, encoded
/// separators in the query). Else none, and the login comes back to the
/// app's root: a login URL that only leads to a 400 page would strand the
/// browser (a 3 KB original URI, `?q=a%0Ab`).
fn login_return_to<'a>(state: &AppState, orig: &'a Original) -> Option<&'a str> {
    let to = orig.uri.as_str();
    let server = &state.config.server;
    (to.len() <= crate::flows::login::MAX_RETURN_TO_BYTES
        && crate::url_policy::return_to::resolve(
            to,
            &server.public_url,
            &server.allowed_return_origins,
        )
        .is_ok())
    .then_some(to)
}

/// Adds `X-Auth-Login-Url` (returning to the original URI) to a 401
/// answering a browser navigation; an API call keeps its bare 401.
fn with_login_url(
    state: &AppState,
    headers: &HeaderMap,
    mut resp: Response,
    orig: &Original,
) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED && is_navigation(headers) {
        let mut login = format!(
            "{}{}",
            state.config.server.public_origin(),
            state.config.server.path("/auth/login"),
        );
        if let Some(to) = login_return_to(state, orig) {
            login.push_str("?return_to=");
            login.extend(utf8_percent_encode(to, NON_ALPHANUMERIC));
        }
        if let Ok(v) = HeaderValue::from_str(&login) {
            resp.headers_mut()
                .insert(HeaderName::from_static(LOGIN_URL_HEADER), v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn each_proxys_convention_names_the_original_request() {
        let traefik = headers(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/api/x?a=1"),
        ]);
        let o = original(&traefik, &Method::GET, None).expect("read");
        assert_eq!((o.method, o.uri.as_str()), (Method::POST, "/api/x?a=1"));
        let nginx = headers(&[
            ("x-original-uri", "/api/y"),
            ("x-original-method", "DELETE"),
        ]);
        let o = original(&nginx, &Method::GET, None).expect("read");
        assert_eq!((o.method, o.uri.as_str()), (Method::DELETE, "/api/y"));
        let bare = headers(&[("x-original-uri", "/api/z")]);
        let o = original(&bare, &Method::PUT, None).expect("read");
        assert_eq!(o.method, Method::PUT);
        let envoy = original(&headers(&[]), &Method::POST, Some("/api/e?b=2")).expect("read");
        assert_eq!(
            (envoy.method, envoy.uri.as_str()),
            (Method::POST, "/api/e?b=2")
        );
        assert!(matches!(
            original(&nginx, &Method::GET, Some("/public")),
            Err(AppError::BadRequest(_))
        ));
    }

    #[test]
    fn both_conventions_naming_different_requests_are_a_bad_request() {
        let forged = headers(&[
            ("x-original-uri", "/api/x"),
            ("x-forwarded-uri", "/public/x"),
        ]);
        assert!(matches!(
            original(&forged, &Method::GET, None),
            Err(AppError::BadRequest(_))
        ));
        let forged = headers(&[
            ("x-original-uri", "/api/x"),
            ("x-original-method", "POST"),
            ("x-forwarded-method", "GET"),
        ]);
        assert!(matches!(
            original(&forged, &Method::POST, None),
            Err(AppError::BadRequest(_))
        ));
        let agreeing = headers(&[("x-original-uri", "/api/x"), ("x-forwarded-uri", "/api/x")]);
        assert!(original(&agreeing, &Method::GET, None).is_ok());
    }

    #[test]
    fn a_missing_or_absolute_original_uri_is_a_bad_request() {
        for h in [
            headers(&[]),
            headers(&[("x-forwarded-uri", "https://evil.example/api")]),
            headers(&[("x-forwarded-uri", "api")]),
        ] {
            assert!(matches!(
                original(&h, &Method::GET, None),
                Err(AppError::BadRequest(_))
            ));
        }
    }
}
