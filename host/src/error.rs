//! The one error type of the control plane: an HTTP status class, a one-line
//! message, and the offending field when there is one. Serialised as
//! `{"error": "...", "field": "..."}`.
//!
//! A status says whether a write was made, because clients act on it: 503
//! ([`ErrorKind::Unavailable`]) means nothing was done and goes out with
//! `x-host-not-written`, so the write may be made elsewhere; 504
//! ([`ErrorKind::OutcomeUnknown`]) means it was sent on and may have been
//! made, so nothing makes it again elsewhere (it could be made twice).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    /// Refused whoever asks this way: another site's page, a foreign `Host`.
    Forbidden,
    NotFound,
    Conflict,
    /// A body past the server's limit.
    PayloadTooLarge,
    UnsupportedMediaType,
    /// Nothing was done (most often: the database is unreachable);
    /// another replica may do it.
    Unavailable,
    /// The request was sent on (to the leading replica, or to the database
    /// as a commit) and no answer came: it may or may not have been made,
    /// so it must not be made again elsewhere without a check.
    OutcomeUnknown,
    /// The server's disk is too full to write.
    InsufficientStorage,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Unavailable => 503,
            ErrorKind::OutcomeUnknown => 504,
            ErrorKind::InsufficientStorage => 507,
            ErrorKind::Internal => 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::BadRequest,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::NotFound,
            message: message.into(),
            field: None,
        }
    }
    pub fn not_found_on(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::NotFound,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Conflict,
            message: message.into(),
            field: None,
        }
    }
    pub fn conflict_on(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Conflict,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Internal,
            message: message.into(),
            field: None,
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Unavailable,
            message: message.into(),
            field: None,
        }
    }
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::OutcomeUnknown,
            message: message.into(),
            field: None,
        }
    }
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::InsufficientStorage,
            message: message.into(),
            field: None,
        }
    }
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Forbidden,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::PayloadTooLarge,
            message: message.into(),
            field: Some("body".into()),
        }
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::UnsupportedMediaType,
            message: message.into(),
            field: Some("content-type".into()),
        }
    }
    pub fn unauthorized() -> Self {
        ApiError {
            kind: ErrorKind::Unauthorized,
            message: "missing or wrong API token (set HOST_API_TOKEN)".into(),
            field: None,
        }
    }
}

/// The wire form.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> Self {
        ErrorBody {
            error: e.message.clone(),
            field: e.field.clone(),
        }
    }
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a
/// `String`), for logs and health.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
