//! API keys: `Authorization: Bearer KEY` on the training and dataset endpoints (and on
//! `/v1/verify` and `/v1/judge` when the server is told to). Keys are held as SHA-256
//! digests and compared in constant time over all of them; a key is never logged.
//!
//! With no key configured, training stays open only on a loopback address: a server bound
//! to a public address answers training requests with 403 and says how to set keys.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("an API key must be at least 16 characters (line {0} of the keys)")]
    Short(usize),
}

/// Who may call what.
#[derive(Clone, Default)]
pub struct Auth {
    digests: Vec<[u8; 32]>,
    /// `/v1/verify` and `/v1/judge` need a key too.
    pub require_for_judging: bool,
    /// The server listens on a loopback address (training without keys is allowed).
    pub loopback: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the keys, only how many
        f.debug_struct("Auth")
            .field("keys", &self.digests.len())
            .field("require_for_judging", &self.require_for_judging)
            .field("loopback", &self.loopback)
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Auth {
    /// Keys from a file (one per line; blank lines and `#` comments skipped) and from a
    /// comma-separated list (`STEPKTO_API_KEYS`).
    pub fn load(
        file: Option<&std::path::Path>,
        list: Option<&str>,
        require_for_judging: bool,
        loopback: bool,
    ) -> Result<Auth, AuthError> {
        let mut keys: Vec<String> = Vec::new();
        if let Some(p) = file {
            let text = std::fs::read_to_string(p).map_err(|e| AuthError::Read {
                path: p.display().to_string(),
                source: e,
            })?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if let Some(l) = list {
            keys.extend(
                l.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_string),
            );
        }
        if let Some(i) = keys.iter().position(|k| k.len() < 16) {
            return Err(AuthError::Short(i + 1));
        }
        Ok(Auth {
            digests: keys.iter().map(|k| digest(k)).collect(),
            require_for_judging,
            loopback,
        })
    }

    /// Open (no keys) on a loopback address: what tests and a local user get.
    pub fn open() -> Auth {
        Auth {
            loopback: true,
            ..Auth::default()
        }
    }

    pub fn keys(&self) -> usize {
        self.digests.len()
    }

    /// Whether `presented` is one of the keys: every digest is compared, byte by byte,
    /// with no early exit, so the time does not tell how much of a key was right.
    fn matches(&self, presented: &str) -> bool {
        let d = digest(presented);
        let mut any = 0u8;
        for k in &self.digests {
            let mut diff = 0u8;
            for (a, b) in k.iter().zip(d.iter()) {
                diff |= a ^ b;
            }
            any |= (diff == 0) as u8;
        }
        any == 1
    }

    fn check(&self, req: &Request, training: bool) -> Result<(), ApiError> {
        if self.digests.is_empty() {
            if training && !self.loopback {
                return Err(ApiError::Forbidden(
                    "training endpoints are closed: this server listens on a non-loopback address and has no API keys; start it with --api-keys-file FILE or STEPKTO_API_KEYS=KEY1,KEY2 and send Authorization: Bearer KEY".into(),
                ));
            }
            return Ok(());
        }
        let Some(h) = req.headers().get(AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "an API key is required: send Authorization: Bearer KEY".into(),
            ));
        };
        let key = h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer KEY`".into())
            })?;
        if self.matches(key) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this API key is not accepted".into()))
        }
    }
}

/// Middleware for `/v1/train*` and `/v1/datasets*`.
pub async fn training(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match st.auth.check(&req, true) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware for `/v1/verify` and `/v1/judge`: a key only when the server asks for one.
pub async fn judging(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !st.auth.require_for_judging {
        return next.run(req).await;
    }
    match st.auth.check(&req, false) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly_and_short_keys_are_refused() {
        let a = Auth::load(
            None,
            Some("0123456789abcdef, fedcba9876543210"),
            false,
            false,
        )
        .unwrap();
        assert_eq!(a.keys(), 2);
        assert!(a.matches("0123456789abcdef"));
        assert!(a.matches("fedcba9876543210"));
        assert!(!a.matches("0123456789abcde"));
        assert!(!a.matches("0123456789abcdeF"));
        assert!(!a.matches(""));
        assert!(matches!(
            Auth::load(None, Some("short"), false, false),
            Err(AuthError::Short(1))
        ));
        assert!(!format!("{a:?}").contains("0123"));
    }
}
