//! Query and path parameters whose refusal is the gateway's own 400
//! (`AppError::BadRequest`: JSON for API calls, a page for navigations),
//! never axum's plain-text rejection, which is neither and quotes the
//! parser's complaint about the request (`duplicate field`, the bytes of
//! an escape that is not UTF-8). The message is fixed: it never echoes
//! what was sent.

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// The query string as `T`; a repeated, malformed or wrongly typed
/// parameter is a 400.
pub struct Query<T>(pub T);

/// The route's path parameters as `T`; a segment that does not decode
/// (an escape that is not UTF-8) or does not parse is a 400.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|_| {
                AppError::BadRequest(
                    "The query parameters are malformed (one is repeated, not valid, or not UTF-8)."
                        .into(),
                )
            })
    }
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|_| AppError::BadRequest("The path is malformed (not valid UTF-8).".into()))
    }
}
