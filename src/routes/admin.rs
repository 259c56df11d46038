//! The admin API: list and revoke any user's sessions, store statistics.
//! Off unless `[admin] listen` is set; served on that separate address only,
//! behind a bearer secret (`admin.token`), so it can be kept off the public
//! network entirely.
//!
//! - `GET  /admin/sessions?user=SUB&limit=N&cursor=C` (one page)
//! - `POST /admin/sessions/revoke` `{"id": ID}` or `{"user": SUB, "except": ID?}`
//! - `GET  /admin/stats?top=N`

use axum::extract::{Query, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::{AppError, AppResult};
use crate::secret::constant_time_eq;
use crate::session::cookie::StoreId;
use crate::session::store::RevokeReason;
use crate::state::AppState;

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(admin) = &state.config.admin else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), admin.token.expose().as_bytes()) => {
            next.run(req).await
        }
        _ => {
            let mut resp = (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized", "message": "A valid admin bearer token is required."}))).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"oidc-bff-admin\""),
            );
            resp
        }
    }
}

async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> AppResult<Response> {
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
    Json(body): Json<RevokeBody>,
) -> AppResult<Response> {
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

async fn stats(State(state): State<AppState>, Query(q): Query<StatsQuery>) -> AppResult<Response> {
    let stats = state
        .sessions
        .stats(q.top.unwrap_or(10).min(1000), crate::clock::unix_now())
        .await?;
    Ok(Json(stats).into_response())
}

/// The admin router, served on `admin.listen`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/sessions", get(list))
        .route("/admin/sessions/revoke", post(revoke))
        .route("/admin/stats", get(stats))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}
