//! The one place where errors become HTTP: every failure a handler can meet is an
//! [`ApiError`], and its `IntoResponse` picks the status and the JSON body
//! `{"error": "...", "error_type": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Error body of every non-2xx response (and of per-item errors in a batch).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    /// validation | too_large | overloaded | timeout | not_ready | not_found | unauthorized |
    /// forbidden | backend | internal
    pub error_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// JSON of the wrong shape or values out of range.
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("server is busy ({0}); retry later")]
    Overloaded(String),
    #[error("request exceeded its deadline of {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    NotReady(String),
    #[error("no route for {0}")]
    NotFound(String),
    /// A resource (job, dataset) that does not exist.
    #[error("{0}")]
    Missing(String),
    /// No API key, or not a Bearer one.
    #[error("{0}")]
    Unauthorized(String),
    /// A key that is not one of the configured keys, or training closed on this address.
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) | ApiError::Validation(_) => "validation",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Timeout(_) => "timeout",
            ApiError::NotReady(_) => "not_ready",
            ApiError::NotFound(_) | ApiError::Missing(_) => "not_found",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            error_type: self.error_type().to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            // The cause is logged, never returned.
            tracing::error!(cause = %cause, "internal error");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body exceeds the limit: {}", r.body_text()))
        } else {
            ApiError::BadJson(r.body_text())
        }
    }
}

impl From<crate::judge::JudgeError> for ApiError {
    fn from(e: crate::judge::JudgeError) -> Self {
        use crate::judge::JudgeError as J;
        match e {
            J::Input(m) => ApiError::Validation(m),
            e @ J::TooLong { .. } => ApiError::TooLarge(e.to_string()),
            J::Overloaded(m) => ApiError::Overloaded(m),
            J::Timeout(ms) => ApiError::Timeout(ms),
            J::Load(m) | J::Backend(m) => ApiError::Internal(m),
            J::Unavailable(m) => ApiError::NotReady(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotReady => {
                ApiError::NotReady("the verdict store is not ready".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::jobs::spec::SpecError> for ApiError {
    fn from(e: crate::jobs::spec::SpecError) -> Self {
        ApiError::Validation(e.to_string())
    }
}

/// Parse a JSON body: syntax errors are 400, shape errors 422, both with the JSON body.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadJson(e.to_string()))?;
    // the error names the field it is about (`items[3].reference: invalid type ...`)
    serde_path_to_error::deserialize(value).map_err(|e| ApiError::Validation(e.to_string()))
}

/// `limit` (default `default`, 1..=`max`) and `offset` (>= 0) of a list request.
pub fn page(
    limit: Option<i64>,
    offset: Option<i64>,
    default: i64,
    max: i64,
) -> Result<(i64, i64), ApiError> {
    let l = limit.unwrap_or(default);
    let o = offset.unwrap_or(0);
    if !(1..=max).contains(&l) {
        return Err(ApiError::Validation(format!("limit: between 1 and {max}")));
    }
    if o < 0 {
        return Err(ApiError::Validation("offset: 0 or more".into()));
    }
    Ok((l, o))
}
