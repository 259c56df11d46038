//! The logged-in user's own sessions, for the single-page app:
//! `GET /auth/sessions?limit=N&cursor=C` lists one page of them (newest
//! first, the caller's marked `current`, `next_cursor` for the next page),
//! `POST /auth/sessions/{id}/revoke` ends one of them. A user can only see
//! and end their own sessions; revoking requires the anti-CSRF header like
//! any state-changing call (the router applies the rule). Also owns the
//! page parameters the admin API shares.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::audit::{Action, Event, Origin};
use crate::error::{AppError, AppResult};
use crate::extract::params::Path;
use crate::extract::session::CurrentSession;
use crate::session::Session;
use crate::session::cookie::StoreId;
use crate::session::store::{ListCursor, RevokeOutcome, RevokeReason};
use crate::state::AppState;

fn subject(session: &Session) -> Result<String, AppError> {
    session
        .claims()?
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| AppError::Internal("session without a subject".into()))
}

/// Sessions per page when `limit` is not given.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// The largest `limit` a listing endpoint accepts.
pub const MAX_PAGE_LIMIT: usize = 100;

/// Where a listing page starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageParams {
    pub cursor: Option<ListCursor>,
    pub limit: usize,
}

/// Reads `limit` (1..=[`MAX_PAGE_LIMIT`], default [`DEFAULT_PAGE_LIMIT`])
/// and `cursor` (a `next_cursor` from an earlier page) from a query string.
/// Anything else about them — out of range, not a number, not a cursor, given
/// twice — is a 400 naming the parameter; other parameters are the caller's.
pub fn page_params(query: Option<&str>) -> Result<PageParams, AppError> {
    let mut limit = None;
    let mut cursor = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => {
                let n = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                    .ok_or_else(|| {
                        AppError::BadRequest(format!(
                            "`limit` must be a whole number from 1 to {MAX_PAGE_LIMIT}."
                        ))
                    })?;
                if limit.replace(n).is_some() {
                    return Err(AppError::BadRequest(
                        "`limit` is given more than once.".into(),
                    ));
                }
            }
            "cursor" => {
                let c = ListCursor::parse(&v).ok_or_else(|| {
                    AppError::BadRequest(
                        "`cursor` must be a `next_cursor` value from an earlier page.".into(),
                    )
                })?;
                if cursor.replace(c).is_some() {
                    return Err(AppError::BadRequest(
                        "`cursor` is given more than once.".into(),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(PageParams {
        cursor,
        limit: limit.unwrap_or(DEFAULT_PAGE_LIMIT),
    })
}

pub async fn list(
    State(state): State<AppState>,
    CurrentSession(session): CurrentSession,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    let now = crate::clock::unix_now();
    let page = page_params(query.as_deref())?;
    let listed = state
        .sessions
        .list_user(&subject(&session)?, page.cursor.as_ref(), page.limit, now)
        .await?;
    let list: Vec<Value> = listed
        .sessions
        .into_iter()
        .map(|info| {
            let is_current = info.id == session.store_id.as_str();
            let mut v = json!(info);
            v["current"] = json!(is_current);
            v
        })
        .collect();
    Ok(Json(json!({ "sessions": list, "next_cursor": listed.next_cursor })).into_response())
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CurrentSession(session): CurrentSession,
    req: axum::extract::Request,
) -> AppResult<Response> {
    let now = crate::clock::unix_now();
    let target =
        StoreId::parse(&id).ok_or_else(|| AppError::BadRequest("Not a session ID.".into()))?;
    // Only the caller's own live sessions, read from that one record;
    // anything else (another user's, ended, unknown) is the same 404.
    if !state
        .sessions
        .belongs_to(&target, &subject(&session)?, now)
        .await?
    {
        return Err(AppError::NotFound);
    }
    let outcome = state
        .sessions
        .revoke(&target, RevokeReason::User, "user", now)
        .await?;
    if outcome == RevokeOutcome::Revoked {
        state.audit.record(
            Origin::of_request(&req),
            Event::success(Action::Revocation)
                .reason(RevokeReason::User.as_str())
                .actor("user")
                .session(&target)
                .user(&crate::audit::subject(&session)),
        );
    }
    let mut resp = Json(json!({ "id": target.as_str(), "result": outcome })).into_response();
    if target == session.store_id && outcome == RevokeOutcome::Revoked {
        for clear in state.sessions.cookies().clear_session_cookies() {
            resp.headers_mut().append(header::SET_COOKIE, clear);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn page_params_default_to_the_first_page_of_fifty() {
        assert_eq!(
            page_params(None).expect("ok"),
            PageParams {
                cursor: None,
                limit: DEFAULT_PAGE_LIMIT
            }
        );
        assert_eq!(page_params(Some("other=1")).expect("ok").limit, 50);
    }

    #[test]
    fn page_params_accept_a_limit_in_range_and_a_cursor_from_a_page() {
        let p = page_params(Some(&format!("limit=100&cursor=1700000000123.{}", id()))).expect("ok");
        assert_eq!(p.limit, 100);
        let c = p.cursor.expect("cursor");
        assert_eq!(c.created_millis, 1_700_000_000_123);
        assert_eq!(c.id.as_str(), id());
    }

    #[test]
    fn page_params_refuse_what_is_out_of_range_malformed_or_repeated() {
        for q in [
            "limit=0".to_owned(),
            "limit=101".to_owned(),
            "limit=-1".to_owned(),
            "limit=ten".to_owned(),
            "limit=".to_owned(),
            "limit=99999999999999999999999".to_owned(),
            "limit=1&limit=2".to_owned(),
            "cursor=".to_owned(),
            "cursor=abc".to_owned(),
            format!("cursor=x.{}", id()),
            format!("cursor=1.{}", "AB".repeat(32)),
            format!("cursor=1.{}&cursor=2.{}", id(), id()),
            format!("cursor=99999999999999999.{}", id()),
        ] {
            assert!(
                matches!(page_params(Some(&q)), Err(AppError::BadRequest(_))),
                "{q} accepted"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]
        #[test]
        fn page_params_never_panic_and_only_yield_bounded_limits(q in ".{0,80}") {
            if let Ok(p) = page_params(Some(&q)) {
                proptest::prop_assert!((1..=MAX_PAGE_LIMIT).contains(&p.limit));
            }
        }
    }
}
