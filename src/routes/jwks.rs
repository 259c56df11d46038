//! `GET /.well-known/jwks.json`: the public keys that verify the identity
//! assertions the gateway sends to upstreams (`identity::Signer`). Served
//! only when `[assertion]` is configured.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

pub async fn jwks(State(state): State<AppState>) -> Response {
    match &state.signer {
        Some(signer) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            signer.jwks_json().to_owned(),
        )
            .into_response(),
        None => AppError::NotFound.into_response(),
    }
}
