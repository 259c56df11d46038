//! Every route of the public listener, registered in one function, and the
//! layers around them, applied in one place.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, any, any_service, get, post};
use bytes::BytesMut;
use http_body_util::BodyExt as _;

use crate::config::{OWN_PREFIXES, RouteAuth};
use crate::error::AppError;
use crate::middleware::{self, csrf, respond};
use crate::proxy::handler;
use crate::proxy::routes::Route;
use crate::routes;
use crate::state::AppState;

pub(crate) mod direct;
pub use direct::{App, DirectRoutes};

/// The public listener's app.
pub fn build_router(state: AppState) -> Router {
    build_app(state).router
}

/// The public listener's app, with its configured routes also reachable
/// without the router where that answers the same (see [`direct`]).
pub fn build_app(state: AppState) -> App {
    // Under a mount path (`server.public_url` with a path) the gateway's
    // own endpoints and the static app move there; configured routes are
    // written in full.
    let server = state.config.server.clone();
    let at = |path: &str| server.path(path);
    let router = Router::new()
        .route(&at("/auth/login"), get(routes::auth::login))
        .route(&at("/auth/callback"), get(routes::auth::callback))
        .route(
            &at("/auth/logout"),
            // GET is the 405 below: logging out by GET would let any page
            // log users out.
            post(routes::logout::logout),
        )
        .route(&at("/auth/logout/end"), get(routes::logout::logout_end))
        .route(&at("/auth/logged-out"), get(routes::logout::logged_out))
        .route(&at("/auth/favicon.svg"), get(crate::pages::favicon))
        .route(&at("/auth/user"), get(routes::user::user))
        .route(&at("/auth/sessions"), get(routes::sessions::list))
        .route(
            &at("/auth/sessions/{id}/revoke"),
            with_csrf(&state, post(routes::sessions::revoke)),
        )
        .route(
            &at("/auth/backchannel-logout"),
            post(routes::backchannel::logout),
        )
        .route(&at("/healthz"), get(routes::health::healthz))
        .route(&at("/readyz"), get(routes::health::readyz))
        .fallback(routes::static_files::serve);
    // Front-channel logout, when enabled (`[oidc.frontchannel_logout]`).
    let router = if state.config.oidc.frontchannel_logout.is_some() {
        router.route(
            &at("/auth/frontchannel-logout"),
            get(routes::frontchannel::logout),
        )
    } else {
        router
    };
    // The identity assertion's public keys and the client key, when the
    // gateway signs anything.
    let router = if state.jwks.is_some() {
        router.route(&at(JWKS_PATH), get(routes::jwks::jwks))
    } else {
        router
    };
    // A method an endpoint does not take is the gateway's own 405 (JSON or
    // a page, with the security headers of either), axum keeping `Allow`;
    // axum's default is an empty body that is neither. Set before the
    // configured routes are added: their handlers answer every method.
    let router = router.method_not_allowed_fallback(method_not_allowed);
    // The gateway's own endpoints read bodies into memory: bounded here.
    // Added before the proxied routes, so it does not wrap them: their
    // bodies stream to the upstream unbuffered.
    let mut router = limit_body(
        router,
        state.config.server.limits.max_body_bytes,
        state.config.server.limits.body_read_timeout,
    );
    // The forward-auth endpoint, when enabled (its path is configurable).
    // Outside the body limit: it never reads a body, and a proxy that
    // passes the original body along (Caddy) must not turn a large upload
    // into a 413.
    if let Some(fa) = &state.config.forward_auth {
        let base = at(fa.path.trim_end_matches('/'));
        router = router
            .route(&base, any(routes::forward_auth::verify))
            // Envoy appends the original path to the endpoint's.
            .route(
                &format!("{base}/{{*original}}"),
                any(routes::forward_auth::verify),
            );
    }

    // RFC 9112's framing and `Host` rules for the gateway's own endpoints
    // and the static app (configured routes apply them in their guard).
    let router = router.layer(axum::middleware::from_fn(message_rules));

    // Layers run outside-in on requests. From the outside: a request ID is
    // assigned (or kept) and echoed on the response, so the access log and
    // every log line below carry it; then one layer on the way out
    // (`respond`): errors become pages for browser navigations first, so
    // the page sees the handler's own response; metrics count what the
    // client gets; security headers are set by response kind on whatever
    // comes back.
    let layers = Layers {
        respond: respond::RespondLayer::new(respond::Respond {
            pages: state.pages.clone(),
            metrics: state.metrics.clone(),
            base: server.base_path.clone(),
        }),
        request_log: middleware::request_log::RequestLogLayer {
            access_log: state.config.log.access_log,
            client_address: state.client_address.clone(),
        },
    };
    let router = router.layer(layers.respond.clone());
    let router = if server.base_path.is_empty() {
        router
    } else {
        router.layer(axum::middleware::map_response_with_state(
            Arc::<str>::from(server.base_path.as_str()),
            login_under_mount,
        ))
    };
    // With traces exported, every request gets a server span: outside the
    // layers above, so the span covers them and records the status the
    // client gets; inside the request ID and access log.
    let router = if state.config.tracing.is_some() {
        router.layer(axum::middleware::from_fn_with_state(
            state.client_address.clone(),
            middleware::server_span::server_span,
        ))
    } else {
        router
    };
    let mut router = router.layer(layers.request_log.clone());

    // Each configured route is registered on the router, so the prefix is
    // matched once and the route's own handler, CSRF rule and guard apply.
    // Registered after the layers, with the same layers in the same order
    // composed around it in one service (`proxied`).
    let mut services = Vec::new();
    for route in state.routes.iter() {
        let (methods, service) = proxy_methods(&state, route, &layers);
        for pattern in route.router_patterns() {
            router = router.route(&pattern, methods.clone());
        }
        services.push((route.clone(), service));
    }
    // Reached without the router only where nothing but a configured
    // route could match and nothing around the router acts on it: no mount
    // path (whose prefix the router's outer service may restore) and no
    // server span (which names the router's matched path).
    let direct = (server.base_path.is_empty() && state.config.tracing.is_none()).then(|| {
        let mut own = OWN_PREFIXES.map(String::from).to_vec();
        if state.jwks.is_some() {
            own.push(JWKS_PATH.into());
        }
        if let Some(fa) = &state.config.forward_auth {
            own.push(fa.path.trim_end_matches('/').to_owned());
        }
        Arc::new(DirectRoutes::new(services, own))
    });

    let base = server.base_path.clone();
    let client_address = state.client_address.clone();
    let pages = Some(state.pages.clone());
    let app = router.with_state(state);
    if base.is_empty() {
        return App {
            router: app,
            direct,
            pages,
        };
    }
    // A proxy that strips the mount path says so with `X-Forwarded-Prefix`:
    // the path is put back before routing, so both kinds of proxy reach the
    // same routes.
    let mounted = Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .map_request(move |req: Request| restore_prefix(req, &base, &client_address))
            .service(app),
    );
    App {
        router: mounted,
        direct: None,
        pages,
    }
}

/// The answer to a method a gateway endpoint does not take.
async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Where the identity assertion's and the client key's public keys are
/// published, when the gateway signs anything. With the forward-auth path
/// it completes `OWN_PREFIXES` (`config::routes`, which configured routes
/// may not overlap, though a route at `/` matches around them): a path
/// under none of them can only reach a configured route or the static app.
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Puts the mount path back on a request whose trusted proxy stripped it
/// (`X-Forwarded-Prefix` equal to the mount path, from a peer in
/// `server.trusted_proxies`). From anyone else, or naming another prefix,
/// the header changes nothing: the request is routed as it came.
fn restore_prefix(
    mut req: Request,
    base: &str,
    client_address: &crate::extract::client::ClientAddressPolicy,
) -> Request {
    let Some(prefix) = req.headers().get(&X_FORWARDED_PREFIX) else {
        return req;
    };
    let named_ours = prefix
        .as_bytes()
        .strip_suffix(b"/")
        .unwrap_or(prefix.as_bytes())
        == base.as_bytes();
    let trusted = client_address.trusts(crate::extract::client::peer_ip_of(req.extensions()));
    let path = req.uri().path();
    let already = path
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !named_ours || !trusted || already || !path.starts_with('/') {
        return req;
    }
    let mut full = String::with_capacity(base.len() + path.len() + 1);
    full.push_str(base);
    full.push_str(path);
    if let Some(q) = req.uri().query() {
        full.push('?');
        full.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    match http::uri::PathAndQuery::try_from(full) {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return req,
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

static X_FORWARDED_PREFIX: http::HeaderName = http::HeaderName::from_static("x-forwarded-prefix");

/// A 401's `WWW-Authenticate` names the login endpoint as a path; under a
/// mount path that path moves with the endpoint.
async fn login_under_mount(State(base): State<Arc<str>>, mut resp: Response) -> Response {
    const ROOT_LOGIN: &str = "login=\"/auth/login\"";
    let h = resp.headers_mut();
    if let Some(v) = h.get(header::WWW_AUTHENTICATE)
        && let Ok(text) = v.to_str()
        && text.contains(ROOT_LOGIN)
        && let Ok(moved) = HeaderValue::from_str(
            &text.replace(ROOT_LOGIN, &format!("login=\"{base}/auth/login\"")),
        )
    {
        h.insert(header::WWW_AUTHENTICATE, moved);
    }
    resp
}

/// `router`'s routes (and fallback) with request bodies of at most `max`
/// bytes, arriving in full within `time`: a larger body is refused with
/// 413 before the handler runs, a slower one with 408 (a client that
/// trickles its body, or stops mid-body, would otherwise hold its
/// connection for ever: the idle timeout waits for a request in flight).
pub fn limit_body<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    max: usize,
    time: Duration,
) -> Router<S> {
    router.layer(axum::middleware::from_fn_with_state(
        BodyLimits { max, time },
        read_body_within,
    ))
}

/// What [`read_body_within`] allows a body.
#[derive(Clone, Copy)]
struct BodyLimits {
    max: usize,
    time: Duration,
}

/// Reads the whole body, at most `max` bytes, so that every handler behind
/// it gets a bounded body whatever the framing: a declared length over the
/// limit is refused before the handler runs, a chunked body as soon as it
/// passes the limit.
async fn read_body_within(
    State(BodyLimits { max, time }): State<BodyLimits>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, mut body) = req.into_parts();
    let size = body.size_hint();
    if size.exact() == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let max_u64 = u64::try_from(max).unwrap_or(u64::MAX);
    if size.lower() > max_u64 {
        if size.lower() <= max_u64.saturating_add(REFUSED_BODY_DRAIN as u64) {
            drain(&mut body).await;
        }
        return payload_too_large();
    }
    let mut read = BytesMut::new();
    let whole = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(
                    AppError::BadRequest("The request body could not be read.".into())
                        .into_response(),
                );
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if read.len() + data.len() > max {
                drain(&mut body).await;
                return Err(payload_too_large());
            }
            read.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(time, whole).await {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => return refused,
        Err(_) => return AppError::BodyTimeout.into_response(),
    }
    let body = Body::from(read.freeze());
    next.run(Request::from_parts(parts, body)).await
}

/// How much more of a refused body is read (and dropped) before the 413 is
/// sent, and for how long: a client still sending its body then reads the
/// answer instead of a connection reset. Beyond either, the connection is
/// closed without waiting.
const REFUSED_BODY_DRAIN: usize = 1024 * 1024;
const REFUSED_BODY_DRAIN_TIME: Duration = Duration::from_secs(5);

async fn drain(body: &mut Body) {
    let discard = async {
        let mut left = REFUSED_BODY_DRAIN;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n > left {
                return;
            }
            left -= n;
        }
    };
    let _ = tokio::time::timeout(REFUSED_BODY_DRAIN_TIME, discard).await;
}

/// 413, and the connection is not reused (the rest of the body is unread).
fn payload_too_large() -> Response {
    let mut resp = AppError::PayloadTooLarge.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Answers 400 to a request whose body framing is ambiguous (`framing`,
/// closing the connection) or whose `Host` breaks RFC 9112 §3.2
/// (`url_policy::host`).
async fn message_rules(req: Request, next: Next) -> Response {
    if !crate::framing::is_unambiguous(req.headers()) {
        tracing::info!("request with ambiguous framing refused");
        return AppError::AmbiguousFraming.into_response();
    }
    match crate::url_policy::host::check_host(req.version(), req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::info!(reason = ?refusal, "request Host refused");
            AppError::BadRequest(refusal.message().into()).into_response()
        }
    }
}

/// `methods` behind the anti-CSRF rule (state-changing methods need the
/// header).
fn with_csrf(state: &AppState, methods: MethodRouter<AppState>) -> MethodRouter<AppState> {
    methods.layer(axum::middleware::from_fn_with_state(
        state.csrf.clone(),
        csrf::require_on_unsafe_methods,
    ))
}

/// The two layers every answer passes that are services of the gateway's
/// own (see `build_router` for the order of all of them), kept so that
/// the configured routes get them composed around their handler
/// (`proxied`).
struct Layers {
    respond: respond::RespondLayer,
    request_log: middleware::request_log::RequestLogLayer,
}

/// The handler of one configured route behind its guard
/// (`handler::GuardLayer`: the route itself, as an extension, and the
/// guard, which on session routes also applies the anti-CSRF rule), with
/// the layers of every answer around them (`proxied`).
fn proxy_methods(
    state: &AppState,
    route: &Arc<Route>,
    layers: &Layers,
) -> (MethodRouter<AppState>, Arc<dyn direct::RouteService>) {
    let guard = |csrf| handler::GuardLayer {
        guard: Arc::new(handler::Guard {
            forwarder: state.forwarder.clone(),
            audit: state.audit.clone(),
            csrf,
        }),
        route: route.clone(),
    };
    match route.auth {
        // Bearer clients send no cookie a browser could be tricked into
        // sending, so their requests need no anti-CSRF header.
        RouteAuth::Required if route.bearer_audience.is_some() => proxied(
            state,
            layers,
            guard(handler::CsrfCheck::UnlessBearer(state.csrf.clone())),
            handler::required,
        ),
        RouteAuth::Required => proxied(
            state,
            layers,
            guard(handler::CsrfCheck::Always(state.csrf.clone())),
            handler::required,
        ),
        RouteAuth::Optional => proxied(
            state,
            layers,
            guard(handler::CsrfCheck::Always(state.csrf.clone())),
            handler::optional,
        ),
        RouteAuth::None => proxied(
            state,
            layers,
            guard(handler::CsrfCheck::None),
            handler::public,
        ),
    }
}

/// A configured route's handler with its guard and, outside them, the
/// layers every answer passes, in `build_router`'s order (request log,
/// server span, login under a mount path, `respond`), composed into one
/// service. Registered after `Router::layer`, which would instead wrap the
/// route once per layer, each wrapping boxed: every request then cloned
/// each box below it again (ten allocations for four levels) and boxed a
/// future per level. The same service is also returned as it is, for
/// requests that reach it without the router ([`direct`]).
fn proxied<H, T>(
    state: &AppState,
    layers: &Layers,
    guard: handler::GuardLayer,
    handler: H,
) -> (MethodRouter<AppState>, Arc<dyn direct::RouteService>)
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let base = &state.config.server.base_path;
    let service = tower::ServiceBuilder::new()
        .layer(layers.request_log.clone())
        .option_layer(state.config.tracing.is_some().then(|| {
            axum::middleware::from_fn_with_state(
                state.client_address.clone(),
                middleware::server_span::server_span,
            )
        }))
        .option_layer((!base.is_empty()).then(|| {
            axum::middleware::map_response_with_state(
                Arc::<str>::from(base.as_str()),
                login_under_mount,
            )
        }))
        .layer(layers.respond.of_kind(crate::metrics::RequestKind::Proxy))
        .layer(guard)
        .service(handler.with_state(state.clone()));
    (any_service(service.clone()), Arc::new(service))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use tower::ServiceExt;

    use super::*;
    use crate::config::RouteConfig;
    use crate::proxy::routes::RouteTable;

    fn route_config(path: &str) -> RouteConfig {
        RouteConfig {
            path: path.into(),
            upstream: "http://127.0.0.1:9".parse().expect("url"),
            strip_prefix: false,
            auth: RouteAuth::None,
            timeout: Duration::from_secs(1),
            body_idle_timeout: Duration::from_secs(100),
            forward_cookies: false,
            policy: Default::default(),
            identity_headers: Vec::new(),
            assertion_audience: None,
            bearer_audience: None,
            step_up: Default::default(),
            token: Default::default(),
            upstream_http2: false,
        }
    }

    pub(super) fn table_of(paths: &[&str]) -> RouteTable {
        RouteTable::new(&paths.iter().map(|p| route_config(p)).collect::<Vec<_>>()).expect("table")
    }

    fn table() -> RouteTable {
        table_of(&["/api", "/api/v2", "/a{b}", "/files.d"])
    }

    /// A router whose routes answer with the prefix they were registered
    /// for, as `build_router` registers them.
    fn answering_router(table: &RouteTable) -> Router {
        let mut router = Router::new();
        for route in table.iter() {
            let name = route.path.clone();
            for pattern in route.router_patterns() {
                let name = name.clone();
                router = router.route(&pattern, axum::routing::any(move || async move { name }));
            }
        }
        router.fallback(|| async { "(fallback)" })
    }

    async fn matched(router: &Router, path: &str) -> String {
        let Ok(req) = http::Request::builder().uri(path).body(Body::empty()) else {
            return "(invalid)".into();
        };
        let Ok(resp) = router.clone().oneshot(req).await;
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "api", "v2", "v20", "a{b}", "a", "files.d", "x", "", ".", "%2e", "api%2F", "v2.json",
        ]);
        prop::collection::vec(segment, 0..5).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    /// The gateway's own endpoints as `build_router` registers them (at
    /// the root; a forward-auth endpoint at `/fa`), answering `(own)`,
    /// and `table`'s routes answering their prefix.
    fn router_with_own_endpoints(table: &RouteTable) -> Router {
        let own = || async { "(own)" };
        let mut router = answering_router(table);
        for path in [
            "/auth/login",
            "/auth/callback",
            "/auth/logout",
            "/auth/sessions/{id}/revoke",
            "/healthz",
            "/readyz",
            JWKS_PATH,
            "/fa",
            "/fa/{*original}",
        ] {
            router = router.route(path, axum::routing::any(own));
        }
        router
    }

    fn direct_for(table: &RouteTable) -> DirectRoutes {
        let services = table
            .iter()
            .map(|r| {
                let name = r.path.clone();
                let service = tower::service_fn(move |_: Request| {
                    let name = name.clone();
                    async move { Ok::<_, std::convert::Infallible>(name.into_response()) }
                });
                (
                    r.clone(),
                    Arc::new(service) as Arc<dyn direct::RouteService>,
                )
            })
            .collect();
        let mut own: Vec<String> = OWN_PREFIXES.map(String::from).to_vec();
        own.extend([JWKS_PATH.to_owned(), "/fa".to_owned()]);
        DirectRoutes::new(services, own)
    }

    fn own_path_strategy() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "auth",
            "login",
            "healthz",
            "readyz",
            ".well-known",
            "jwks.json",
            "fa",
            "api",
            "v2",
            "x",
            "",
            "%2e",
            "authx",
            "AUTH",
        ]);
        prop::collection::vec(segment, 0..4).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Wherever the direct dispatch takes a path, the router would have
        /// sent it to the same configured route — also with a route at `/`
        /// around the gateway's own endpoints.
        #[test]
        fn a_directly_dispatched_path_reaches_the_route_the_router_would(
            path in own_path_strategy(),
            root in proptest::arbitrary::any::<bool>(),
        ) {
            let mut paths = vec!["/api", "/api/v2"];
            if root {
                paths.push("/");
            }
            let table = table_of(&paths);
            let router = router_with_own_endpoints(&table);
            let direct = direct_for(&table);
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let got = runtime.block_on(matched(&router, &path));
            if let Some(service) = direct.find(&http::Method::GET, &path) {
                let req = http::Request::builder().uri(path.as_str()).body(Body::empty()).expect("req");
                let Ok(resp) = runtime.block_on(DirectRoutes::call(service, req));
                let bytes = runtime.block_on(resp.into_body().collect()).expect("body").to_bytes();
                prop_assert_eq!(String::from_utf8_lossy(&bytes).into_owned(), got, "path {}", path);
            }
        }

        /// The router picks exactly the route `RouteTable::find` (the
        /// longest prefix on a segment boundary) names, or the fallback.
        #[test]
        fn the_router_matches_route_prefixes_as_the_route_table_specifies(path in path_strategy()) {
            let table = table();
            let router = answering_router(&table);
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let got = runtime.block_on(matched(&router, &path));
            if got != "(invalid)" {
                let want = table.find(&path).map_or("(fallback)".to_owned(), |r| r.path.clone());
                prop_assert_eq!(got, want, "path {}", path);
            }
        }
    }
}
