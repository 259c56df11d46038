//! The demo upstream API: it trusts only a valid Bearer token (a JWT signed
//! by the OpenID provider, checked against its JWKS), and answers with who
//! called. In the demo the browser never holds that token: oidc-bff attaches
//! it. Not part of the gateway; a stand-in for your API.
//!
//! `GET /api/live` is a WebSocket: the handshake carries the token too, and
//! once open the API greets the caller by name and answers each message.
//!
//!     cargo run --example demo-api -- --listen 127.0.0.1:9100 --issuer http://127.0.0.1:9000

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use clap::Parser;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

#[derive(Parser, Clone)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "DEMO_API_LISTEN", default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// The provider's issuer; tokens must carry it as `iss`.
    #[arg(long, env = "DEMO_API_ISSUER")]
    issuer: String,
    /// Where to fetch the provider's keys (default: from discovery at the issuer).
    #[arg(long, env = "DEMO_API_JWKS_URL")]
    jwks_url: Option<String>,
    /// Required `aud` (default: not checked).
    #[arg(long, env = "DEMO_API_AUDIENCE")]
    audience: Option<String>,
}

struct Keys {
    set: RwLock<(Vec<Jwk>, Option<Instant>)>,
}

#[derive(Clone)]
struct App {
    args: Arc<Args>,
    keys: Arc<Keys>,
    http: reqwest::Client,
}

impl App {
    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(u) = &self.args.jwks_url {
            return Ok(u.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.args.issuer.trim_end_matches('/')
        );
        let doc: Value = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        doc["jwks_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no jwks_uri".into())
    }

    async fn refresh_keys(&self) -> Result<(), String> {
        let url = self.jwks_url().await?;
        let set: JwkSet = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        *self.keys.set.write().unwrap_or_else(|p| p.into_inner()) =
            (set.keys, Some(Instant::now()));
        Ok(())
    }

    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, String> {
        let find = |app: &App| {
            let guard = app.keys.set.read().unwrap_or_else(|p| p.into_inner());
            guard
                .0
                .iter()
                .find(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
                .cloned()
        };
        if let Some(k) = find(self) {
            return DecodingKey::from_jwk(&k).map_err(|e| e.to_string());
        }
        let recent = self
            .keys
            .set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if !recent {
            self.refresh_keys().await?;
        }
        let k = find(self).ok_or("no key for this token")?;
        DecodingKey::from_jwk(&k).map_err(|e| e.to_string())
    }
}

fn refuse(reason: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "invalid_token", "message": reason })),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The claims of the request's Bearer token, or the 401 to answer.
async fn verify(app: &App, headers: &header::HeaderMap) -> Result<Value, Response> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(refuse(
            "no Bearer token: this API is only reachable through oidc-bff",
        ));
    };
    let Ok(head) = jsonwebtoken::decode_header(token) else {
        return Err(refuse("the token is not a JWT"));
    };
    if !matches!(
        head.alg,
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256
    ) {
        return Err(refuse("unexpected signing algorithm"));
    }
    let key = match app.key(head.kid.as_deref()).await {
        Ok(k) => k,
        Err(e) => return Err(refuse(&format!("cannot get the provider's keys: {e}"))),
    };
    let mut v = Validation::new(head.alg);
    v.set_issuer(&[app.args.issuer.as_str()]);
    match &app.args.audience {
        Some(aud) => v.set_audience(&[aud.as_str()]),
        None => v.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| refuse(&format!("token rejected: {e}")))
}

fn caller(claims: &Value) -> String {
    claims["name"]
        .as_str()
        .or(claims["preferred_username"].as_str())
        .or(claims["sub"].as_str())
        .unwrap_or("stranger")
        .to_owned()
}

async fn handle(State(app): State<App>, req: Request) -> Response {
    let claims = match verify(&app, req.headers()).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let who = caller(&claims);
    Json(json!({
        "message": format!("Hello, {who}! This answer comes from the demo API, which verified your access token."),
        "sub": claims["sub"],
        "issuer": claims["iss"],
        "audience": claims["aud"],
        "scope": claims["scope"],
        "token_expires_in": claims["exp"].as_u64().map(|e| e.saturating_sub(now)),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        // Names only: shows the gateway's own cookie never arrives here.
        "cookies_received": cookie_names(&req),
        "served_at": now,
    }))
    .into_response()
}

/// `GET /api/live`: a WebSocket for the token's owner.
async fn live(State(app): State<App>, req: Request) -> Response {
    let claims = match verify(&app, req.headers()).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &app).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let who = caller(&claims);
    ws.on_upgrade(move |socket| talk(socket, who))
}

async fn talk(mut socket: WebSocket, who: String) {
    let hello = format!(
        "Hello, {who}! This WebSocket reached the demo API through oidc-bff, which attached your access token to the handshake."
    );
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = socket.recv().await {
        match msg {
            Message::Text(t) => {
                let answer = format!("{who} said: {}", t.as_str());
                if socket.send(Message::Text(answer.into())).await.is_err() {
                    return;
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

fn cookie_names(req: &Request) -> Vec<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let app = App {
        args: Arc::new(args.clone()),
        keys: Arc::new(Keys {
            set: RwLock::new((Vec::new(), None)),
        }),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default(),
    };
    let router = Router::new()
        .route("/api/live", axum::routing::get(live))
        .fallback(handle)
        .with_state(app);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-api: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!(
        "demo-api listening on http://{} (issuer {})",
        args.listen, args.issuer
    );
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("demo-api: {e}");
    }
}
