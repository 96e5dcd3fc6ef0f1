//! Authentication as extractors: a handler that takes `Admin` or `Client` runs only for a
//! request that carries a valid token, and the check runs before the body is read (extractors of
//! the request's head run before the one that reads the body).
//!
//! Decisions:
//! - Tokens are kept as SHA-256 digests and a presented token is hashed before it is compared
//!   (with `subtle`), so the time taken tells neither the stored token's length nor how much of it
//!   a guess got right; every client token is compared, so it does not tell which one was close.
//! - The scheme of `Authorization` is case-insensitive (`Bearer`, `bearer`, `BEARER`), as RFC 9110
//!   says of every auth scheme.
//! - An entry of `FLAG_CLIENT_TOKENS` is `TOKEN` (every environment) or `ENV|ENV...:TOKEN` (those
//!   environments only); the part before the first `:` must be valid environment names, so a token
//!   containing `:` is written with its scope (`production:ab:cd`). A token valid for other
//!   environments only is `403`; a token scoped to exactly one environment selects it when the
//!   request has no `X-Environment`.
//! - Admin tokens have names (`FLAG_ADMIN_TOKENS=name:token,...`, and `FLAG_ADMIN_TOKEN` named
//!   `admin`): the name of the token a request presented is the actor of its writes, which the
//!   audit log records. Every admin token is compared, as client tokens are.
//! - Every `401` carries `WWW-Authenticate: Bearer`.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use flag_core::{Actor, Environment, ErrorCode};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::{IntoParams, PartialSchema};

use crate::errors::{ApiError, ApiErrorCode, OfrepError};
use crate::state::AppState;

/// A secret kept as its SHA-256 digest, compared in constant time.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// The secret `token`.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is this secret, in time independent of both.
    fn matches(&self, presented: &str) -> Choice {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&presented)
    }
}

/// Never shows the digest.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// What `presented` is configured with, if it is one of `entries`' secrets. Every secret is
/// compared (no early exit), so the time taken does not tell which one was close.
fn matching<'a, T>(entries: &'a [(Secret, T)], presented: &str) -> Option<&'a T> {
    let mut found = None;
    for (secret, value) in entries {
        let matched: bool = secret.matches(presented).into();
        if matched && found.is_none() {
            found = Some(value);
        }
    }
    found
}

/// The environments a client token is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every environment (an unscoped token, or OFREP left open).
    Every,
    /// These environments only.
    Only(Vec<Environment>),
}

impl Scope {
    fn allows(&self, env: &Environment) -> bool {
        match self {
            Scope::Every => true,
            Scope::Only(environments) => environments.contains(env),
        }
    }
}

/// The tokens OFREP clients must present, each with its scope.
#[derive(Debug, Clone)]
pub struct ClientTokens {
    entries: Vec<(Secret, Scope)>,
}

/// An entry of `FLAG_CLIENT_TOKENS` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FLAG_CLIENT_TOKENS entry {position}: {reason}")]
pub struct TokenError {
    /// The entry's position, from 1.
    pub position: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl ClientTokens {
    /// The tokens of `entries` (`TOKEN` or `ENV|ENV:TOKEN`; blank entries are skipped), `None`
    /// when no entry holds a token (OFREP stays open).
    pub fn parse(entries: &[String]) -> Result<Option<Self>, TokenError> {
        let mut parsed = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let error = |reason: String| TokenError {
                position: index + 1,
                reason,
            };
            let (scope, token) = match entry.split_once(':') {
                None => (Scope::Every, entry),
                Some((environments, token)) => {
                    let environments = environments
                        .split('|')
                        .map(|name| {
                            Environment::parse(name.trim()).map_err(|_| {
                                error(format!(
                                    "{name:?} is not an environment name (the part before `:` \
                                     lists the token's environments, separated by `|`)"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    (Scope::Only(environments), token.trim())
                }
            };
            if token.is_empty() {
                return Err(error("the token after `:` is empty".to_owned()));
            }
            parsed.push((Secret::new(token), scope));
        }
        Ok((!parsed.is_empty()).then_some(Self { entries: parsed }))
    }

    /// The scope of `presented`, if it is one of the tokens. Every token is compared.
    fn scope_of(&self, presented: &str) -> Option<&Scope> {
        matching(&self.entries, presented)
    }
}

/// The tokens of the management API, each with the name its writes are recorded under (none by
/// default: then every management request is `401`).
#[derive(Debug, Clone, Default)]
pub struct AdminTokens {
    entries: Vec<(Secret, Actor)>,
}

/// The name `FLAG_ADMIN_TOKEN`'s token goes by.
pub const DEFAULT_ADMIN_NAME: &str = "admin";

/// An entry of `FLAG_ADMIN_TOKENS` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FLAG_ADMIN_TOKENS entry {position}: {reason}")]
pub struct AdminTokenError {
    /// The entry's position, from 1 (0: `FLAG_ADMIN_TOKEN`).
    pub position: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl AdminTokens {
    /// `FLAG_ADMIN_TOKEN` (named `admin`, when given) and the `name:token` entries of
    /// `FLAG_ADMIN_TOKENS` (blank entries skipped). Names are unique and tokens too: a token
    /// with two names would make its writes' actor a guess.
    pub fn parse(admin_token: Option<&str>, entries: &[String]) -> Result<Self, AdminTokenError> {
        let mut parsed: Vec<(String, Actor)> = Vec::new();
        if let Some(token) = admin_token.filter(|token| !token.is_empty()) {
            parsed.push((
                token.to_owned(),
                Actor::parse(DEFAULT_ADMIN_NAME).map_err(|_| AdminTokenError {
                    position: 0,
                    reason: "the default name is invalid".to_owned(),
                })?,
            ));
        }
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let error = |reason: String| AdminTokenError {
                position: index + 1,
                reason,
            };
            let Some((name, token)) = entry.split_once(':') else {
                return Err(error(
                    "expected `name:token` (a name such as `alice`, then the token)".to_owned(),
                ));
            };
            let name = Actor::parse(name.trim()).map_err(|refused| {
                error(format!(
                    "{refused} (names are `^[a-z0-9][a-z0-9_.-]{{0,63}}$`)"
                ))
            })?;
            let token = token.trim();
            if token.is_empty() {
                return Err(error("the token after `:` is empty".to_owned()));
            }
            if parsed.iter().any(|(_, known)| *known == name) {
                return Err(error(format!(
                    "the name {name} is given twice (`{DEFAULT_ADMIN_NAME}` is FLAG_ADMIN_TOKEN's)"
                )));
            }
            if parsed.iter().any(|(known, _)| known == token) {
                return Err(error(format!(
                    "the token of {name} is also another name's token"
                )));
            }
            parsed.push((token.to_owned(), name));
        }
        Ok(Self {
            entries: parsed
                .into_iter()
                .map(|(token, name)| (Secret::new(&token), name))
                .collect(),
        })
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of `presented`, if it is one of the tokens. Every token is compared.
    fn name_of(&self, presented: &str) -> Option<&Actor> {
        matching(&self.entries, presented)
    }
}

/// A management request that presented an admin token (`Authorization: Bearer <token>`), with
/// the token's name.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    /// The token's name: the actor of the request's writes.
    pub(crate) actor: Actor,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = bearer(&parts.headers).unwrap_or_default();
        match state.admin_tokens.name_of(presented) {
            Some(actor) => Ok(Admin {
                actor: actor.clone(),
            }),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ApiErrorCode::Unauthorized,
                "a valid admin token is required (Authorization: Bearer <token>)",
            )),
        }
    }
}

/// An OFREP request that presented a client token (`Authorization: Bearer` or `X-API-Key`), or
/// any OFREP request when no client tokens are configured, with the environment it asks for.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The environment of the request, allowed by the token.
    pub(crate) environment: Environment,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = OfrepError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OfrepError> {
        let scope: &Scope = match &state.client_tokens {
            None => &Scope::Every,
            Some(tokens) => {
                let presented = bearer(&parts.headers).or_else(|| {
                    parts
                        .headers
                        .get("x-api-key")
                        .and_then(|value| value.to_str().ok())
                });
                presented
                    .and_then(|presented| tokens.scope_of(presented))
                    .ok_or_else(|| {
                        OfrepError::new(
                            StatusCode::UNAUTHORIZED,
                            ErrorCode::General,
                            "a valid client token is required (Authorization: Bearer <token> \
                             or X-API-Key)",
                        )
                        .about(&parts.uri)
                    })?
            }
        };
        let environment = requested_environment(state, &parts.headers, scope)
            .map_err(|error| error.about(&parts.uri))?;
        if !scope.allows(&environment) {
            return Err(OfrepError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::General,
                format!("this client token is not valid for environment {environment}"),
            )
            .about(&parts.uri));
        }
        Ok(Client { environment })
    }
}

/// Whether the request carries a client token (`Authorization: Bearer` or `X-API-Key`) valid
/// for `env`; for routes that take other credentials too (event streams).
pub(crate) fn client_token_allows(
    tokens: &ClientTokens,
    headers: &HeaderMap,
    env: &Environment,
) -> bool {
    bearer(headers)
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
        })
        .and_then(|presented| tokens.scope_of(presented))
        .is_some_and(|scope| scope.allows(env))
}

/// The request header naming the environment of an OFREP request.
const ENVIRONMENT_HEADER: &str = "X-Environment";

impl IntoParams for Client {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name(ENVIRONMENT_HEADER)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The environment; when absent, the only environment of a token scoped to \
                     one, else `FLAG_DEFAULT_ENVIRONMENT`.",
                ))
                .schema(Some(Environment::schema()))
                .build(),
        ]
    }
}

/// `X-Environment`; else the only environment of a token scoped to one; else the default.
fn requested_environment(
    state: &AppState,
    headers: &HeaderMap,
    scope: &Scope,
) -> Result<Environment, OfrepError> {
    match headers.get(ENVIRONMENT_HEADER) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|name| Environment::parse(name).ok())
            .ok_or_else(|| {
                OfrepError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::General,
                    "X-Environment must match ^[a-z0-9][a-z0-9_-]{0,63}$",
                )
            }),
        None => Ok(match scope {
            Scope::Only(environments) if environments.len() == 1 => environments[0].clone(),
            _ => state.default_environment.clone(),
        }),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The challenge every `401` carries.
pub(crate) const CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        let secret = Secret::new("token");
        assert!(bool::from(secret.matches("token")));
        assert!(!bool::from(secret.matches("tokem")));
        assert!(!bool::from(secret.matches("token2")));
        assert!(!bool::from(secret.matches("")));
        assert!(!format!("{secret:?}").contains("token"));
    }

    #[test]
    fn admin_tokens_are_found_by_their_secret_and_answer_their_name() {
        let named: Vec<String> = ["alice:a-secret", " ", "ci.bot:c:with:colons"]
            .iter()
            .map(|entry| (*entry).to_owned())
            .collect();
        let tokens = AdminTokens::parse(Some("root-secret"), &named).unwrap();
        let name = |presented: &str| tokens.name_of(presented).map(Actor::as_str);
        assert_eq!(name("root-secret"), Some("admin"));
        assert_eq!(name("a-secret"), Some("alice"));
        assert_eq!(name("c:with:colons"), Some("ci.bot"));
        assert_eq!(name("alice"), None, "a name is not a secret");
        assert_eq!(name(""), None);
        // No token at all, or an empty one, admits nobody.
        let none = AdminTokens::parse(Some(""), &[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.name_of(""), None);
        assert_eq!(AdminTokens::default().name_of(""), None);
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "  bEaReR   t "] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(bearer(&headers), Some("t"), "{value:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic t"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn entries_carry_their_scopes() {
        let entries: Vec<String> = ["all", "staging|dev:st", " ", "production:a:b"]
            .iter()
            .map(|entry| (*entry).to_owned())
            .collect();
        let tokens = ClientTokens::parse(&entries).unwrap().unwrap();
        let env = |name: &str| Environment::parse(name).unwrap();
        assert_eq!(tokens.scope_of("all"), Some(&Scope::Every));
        assert_eq!(
            tokens.scope_of("st"),
            Some(&Scope::Only(vec![env("staging"), env("dev")]))
        );
        assert_eq!(
            tokens.scope_of("a:b"),
            Some(&Scope::Only(vec![env("production")]))
        );
        assert_eq!(tokens.scope_of("staging|dev:st"), None);
        assert_eq!(tokens.scope_of("nope"), None);
        assert!(ClientTokens::parse(&[" ".to_owned()]).unwrap().is_none());
        let bad = ClientTokens::parse(&["ok".to_owned(), "Prod:x".to_owned()]).unwrap_err();
        assert_eq!(bad.position, 2);
        assert!(ClientTokens::parse(&["production:".to_owned()]).is_err());
    }
}
