//! The admin API: list and revoke any user's sessions, store statistics.
//! Off unless `[admin] listen` is set; served on that separate address only,
//! behind a bearer secret (`admin.token`), so it can be kept off the public
//! network entirely.
//!
//! - `GET  /admin/sessions?user=SUB&limit=N&cursor=C` (one page)
//! - `POST /admin/sessions/revoke` `{"id": ID}` or `{"user": SUB, "except": ID?}`
//! - `GET  /admin/stats?top=N`
//! - `POST /admin/reload` (as SIGHUP: `crate::reload`)

use axum::extract::{RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::audit::{Action, Event, Origin, RequestFacts};
use crate::error::{AppError, AppResult};
use crate::extract::params::Query;
use crate::secret::constant_time_eq;
use crate::session::cookie::StoreId;
use crate::session::store::{RevokeOutcome, RevokeReason};
use crate::state::AppState;

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(admin) = &state.config.admin else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The scheme is case-insensitive (RFC 9110 §11.1: `bearer` is
    // `Bearer`), followed by one or more spaces.
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start_matches(' '));
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), admin.token.expose().as_bytes()) => {
            next.run(req).await
        }
        _ => {
            state.audit.record(
                Origin::of_request(&req),
                Event::failure(Action::AdminAction, "unauthorized"),
            );
            let mut resp = (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized", "message": "A valid admin bearer token is required."}))).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"oidc-bff-admin\""),
            );
            resp
        }
    }
}

async fn list(
    State(state): State<AppState>,
    facts: RequestFacts,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    let page = super::sessions::page_params(query.as_deref())?;
    let users: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned())
        .collect();
    let user = match users.as_slice() {
        [u] if !u.is_empty() => u.clone(),
        [_, _, ..] => {
            return Err(AppError::BadRequest(
                "Query parameter `user` is given more than once.".into(),
            ));
        }
        _ => {
            return Err(AppError::BadRequest(
                "Query parameter `user` is required.".into(),
            ));
        }
    };
    let listed = state
        .sessions
        .list_user(
            &user,
            page.cursor.as_ref(),
            page.limit,
            crate::clock::unix_now(),
        )
        .await?;
    state.audit.record(
        facts.origin(),
        Event::success(Action::AdminAction)
            .operation("list_sessions")
            .user(&user),
    );
    Ok(Json(
        json!({ "user": user, "sessions": listed.sessions, "next_cursor": listed.next_cursor }),
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    id: Option<String>,
    user: Option<String>,
    except: Option<String>,
}

async fn revoke(
    State(state): State<AppState>,
    facts: RequestFacts,
    Json(body): Json<RevokeBody>,
) -> AppResult<Response> {
    let origin = facts.origin();
    let revoked = |id: &StoreId, user: Option<&str>| {
        let mut event = Event::success(Action::Revocation)
            .reason(RevokeReason::Admin.as_str())
            .actor("admin")
            .session(id);
        if let Some(u) = user {
            event = event.user(u);
        }
        state.audit.record(origin, event);
    };
    let now = crate::clock::unix_now();
    let parse = |s: &str| {
        StoreId::parse(s).ok_or_else(|| {
            AppError::BadRequest(format!(
                "`{s}` is not a session ID (60 or 64 hex characters)."
            ))
        })
    };
    match (body.id, body.user) {
        (Some(id), None) => {
            let id = parse(&id)?;
            let outcome = state
                .sessions
                .revoke(&id, RevokeReason::Admin, "admin-api", now)
                .await?;
            let n = usize::from(outcome == RevokeOutcome::Revoked);
            state.audit.record(
                origin,
                Event::success(Action::AdminAction)
                    .operation("revoke_session")
                    .session(&id)
                    .sessions(n),
            );
            if n == 1 {
                revoked(&id, None);
            }
            Ok(Json(json!({ "id": id.as_str(), "result": outcome })).into_response())
        }
        (None, Some(user)) => {
            let except = body.except.as_deref().map(parse).transpose()?;
            let ids = state
                .sessions
                .revoke_user(
                    &user,
                    except.as_ref(),
                    RevokeReason::Admin,
                    "admin-api",
                    now,
                )
                .await?;
            state.audit.record(
                origin,
                Event::success(Action::AdminAction)
                    .operation("revoke_user")
                    .user(&user)
                    .sessions(ids.len()),
            );
            for id in &ids {
                revoked(id, Some(&user));
            }
            Ok(Json(json!({ "user": user, "revoked": ids.iter().map(StoreId::as_str).collect::<Vec<_>>() })).into_response())
        }
        _ => Err(AppError::BadRequest(
            "Give either `id` or `user` (with optional `except`).".into(),
        )),
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    top: Option<usize>,
}

async fn stats(
    State(state): State<AppState>,
    facts: RequestFacts,
    Query(q): Query<StatsQuery>,
) -> AppResult<Response> {
    let stats = state
        .sessions
        .stats(q.top.unwrap_or(10).min(1000), crate::clock::unix_now())
        .await?;
    state.audit.record(
        facts.origin(),
        Event::success(Action::AdminAction).operation("stats"),
    );
    Ok(Json(stats).into_response())
}

/// Reloads the configuration file and reports the outcome: 200 when it
/// took effect (with the keys that wait for a restart), 422 when the
/// running configuration was kept (with why).
async fn reload(State(state): State<AppState>, facts: RequestFacts) -> AppResult<Response> {
    let Some(report) = state.lifecycle.request_reload().await else {
        // An embedded gateway (tests, `serve`) has no file to reload.
        return Err(AppError::NotFound);
    };
    let (status, event) = if report.result == "success" {
        (StatusCode::OK, Event::success(Action::AdminAction))
    } else {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Event::failure(Action::AdminAction, report.result),
        )
    };
    state
        .audit
        .record(facts.origin(), event.operation("reload"));
    Ok((status, Json(report)).into_response())
}

async fn not_found() -> AppError {
    AppError::NotFound
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// The admin router, served on `admin.listen`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/sessions", get(list))
        .route("/admin/sessions/revoke", post(revoke))
        .route("/admin/stats", get(stats))
        .route("/admin/reload", post(reload))
        // Unknown paths and methods get the gateway's JSON answers (axum's
        // are empty; `Allow` is kept), behind the token like the rest.
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}
