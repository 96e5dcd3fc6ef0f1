//! Authentication as extractors: a handler that takes [`Admin`] or [`Client`] runs only for a
//! request that carries a valid token, and the check runs before the body is read.
//!
//! Tokens are compared in time that does not tell how close a wrong one was, and are never
//! logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use flag_core::ErrorCode;

use crate::errors::{ApiError, OfrepError};
use crate::state::AppState;

/// A management request that presented the admin token (`Authorization: Bearer <token>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = bearer(&parts.headers).unwrap_or_default();
        if constant_time_eq(state.admin_token.as_bytes(), presented.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin token is required (Authorization: Bearer <token>)",
            ))
        }
    }
}

/// An OFREP request that presented a client token (`Authorization: Bearer` or `X-API-Key`), or
/// any OFREP request when no client tokens are configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client;

impl FromRequestParts<AppState> for Client {
    type Rejection = OfrepError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OfrepError> {
        let Some(tokens) = &state.client_tokens else {
            return Ok(Client);
        };
        let presented = bearer(&parts.headers).or_else(|| {
            parts
                .headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
        });
        let accepted = presented.is_some_and(|presented| {
            // Check every token, so the time taken does not tell which one was close.
            tokens.iter().fold(false, |found, token| {
                found | constant_time_eq(token.as_bytes(), presented.as_bytes())
            })
        });
        if accepted {
            Ok(Client)
        } else {
            Err(OfrepError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::General,
                "a valid client token is required (Authorization: Bearer <token> or X-API-Key)",
            ))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

/// Compares two secrets in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
