//! `GET /auth/frontchannel-logout?iss=…&sid=…`: OpenID Connect Front-Channel
//! Logout 1.0. The provider's logout page loads this in an iframe; the
//! sessions of that provider session (`sid`, the back-channel index) end.
//!
//! `iss` and `sid` are required and `iss` must be the configured issuer: a
//! GET ending whatever session its cookie names would let any page log
//! users out. The answer is a tiny page, never cached, that only the
//! origins of `oidc.frontchannel_logout.frame_ancestors` may frame; no
//! other response is relaxed ([`ResponseKind::FramedByProvider`]).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::audit::{Action, Event, Origin};
use crate::extract::params::Query;
use crate::security_headers::{ResponseKind, mark};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct FrontchannelQuery {
    iss: Option<String>,
    sid: Option<String>,
}

/// The page, with the headers that let the provider (and only it) frame it.
fn page(state: &AppState, status: StatusCode, text: &'static str) -> Response {
    let ancestors = state
        .config
        .oidc
        .frontchannel_logout
        .as_ref()
        .map(|f| f.frame_ancestors.join(" "))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "'none'".into());
    let csp = format!(
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{text}</title></head><body><p>{text}</p></body></html>"
    );
    let mut resp = (status, Html(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    mark(resp, ResponseKind::FramedByProvider)
}

/// Whether `iss` is the configured issuer (a trailing slash aside, as at
/// discovery).
fn is_our_issuer(state: &AppState, iss: &str) -> bool {
    let ours = state.config.oidc.issuer.as_str();
    iss == ours || iss == ours.trim_end_matches('/')
}

/// `GET /auth/frontchannel-logout`.
pub async fn logout(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Query(q): Query<FrontchannelQuery>,
) -> Response {
    let origin = Origin::of_parts(&parts);
    let refused = |why: &'static str| {
        state
            .audit
            .record(origin, Event::failure(Action::FrontchannelLogout, why));
        page(&state, StatusCode::BAD_REQUEST, "Logout request refused.")
    };
    let (Some(iss), Some(sid)) = (q.iss.as_deref(), q.sid.as_deref()) else {
        tracing::info!("front-channel logout refused: iss and sid are required");
        return refused("bad_request");
    };
    if sid.is_empty() || sid.len() > 256 {
        tracing::info!("front-channel logout refused: no usable sid");
        return refused("bad_request");
    }
    if !is_our_issuer(&state, iss) {
        tracing::info!("front-channel logout refused: not our issuer");
        return refused("issuer_mismatch");
    }
    let now = crate::clock::unix_now();
    match state
        .sessions
        .revoke_provider_session(sid, "provider", now)
        .await
    {
        Ok(ended) => {
            tracing::info!(sessions = ended.len(), "front-channel logout");
            state.audit.record(
                origin,
                Event::success(Action::FrontchannelLogout).sessions(ended.len()),
            );
            for id in &ended {
                state.audit.record(
                    origin,
                    Event::success(Action::Revocation)
                        .reason("frontchannel")
                        .actor("provider")
                        .session(id),
                );
            }
            page(&state, StatusCode::OK, "Logged out.")
        }
        Err(e) => {
            tracing::warn!(error = %e, "front-channel logout: session store unavailable");
            page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Logout could not be completed.",
            )
        }
    }
}
