//! `GET /.well-known/jwks.json`: the public keys that verify the identity
//! assertions the gateway sends to upstreams (`identity::Signer`) and the
//! `private_key_jwt` client key (`oidc::client_auth`). Served only when
//! `[assertion]` or `oidc.client_key_file` is configured.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

pub async fn jwks(State(state): State<AppState>) -> Response {
    match &state.jwks {
        Some(jwks) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            jwks.clone(),
        )
            .into_response(),
        None => AppError::NotFound.into_response(),
    }
}
