//! The control plane's error, [`ApiError`]: what kind of refusal or
//! failure, a one-line message, and the offending field when there is one.
//! The layers below have their own errors ([`StoreError`],
//! [`TransitionError`]) and are turned into it here, once; `server` alone
//! maps a kind to an HTTP status (`server/error.rs`) and sends the wire form
//! `{"error": "...", "field": "..."}`.
//!
//! A status says whether a write was made, because clients act on it: 503
//! ([`ErrorKind::Unavailable`]) means nothing was done and goes out with
//! `x-host-not-written`, so the write may be made elsewhere; 504
//! ([`ErrorKind::OutcomeUnknown`]) means it was sent on and may have been
//! made, so nothing makes it again elsewhere (it could be made twice).

use crate::orchestration::TransitionError;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};

/// What went wrong, in the control plane's terms (`server` gives each its
/// status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
            message: "missing, wrong or revoked API token (set HOST_API_TOKEN)".into(),
            field: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::Unavailable(_) => ApiError::unavailable(message),
            StoreError::OutcomeUnknown(_) => ApiError::outcome_unknown(message),
            StoreError::DiskFull(_) => ApiError::insufficient_storage(message),
            StoreError::BadCursor => ApiError::bad_request("cursor", message),
            StoreError::BadUrl(_) => ApiError::bad_request("database_url", message),
            StoreError::Corrupt(_) | StoreError::Internal(_) => ApiError::internal(message),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        ApiError {
            kind: if e.is_bad_request() {
                ErrorKind::BadRequest
            } else {
                ErrorKind::Conflict
            },
            message: e.to_string(),
            field: e.field().map(String::from),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StateType;

    /// Clients read `field` and the status: a refusal from the state machine
    /// or the store keeps the form it had when they were `ApiError`s.
    #[test]
    fn lower_errors_keep_their_kind_and_field() {
        let missing = ApiError::from(TransitionError::NoTarget);
        assert_eq!(
            missing,
            ApiError::bad_request("type", "type: the target state is required")
        );
        let name = ApiError::from(TransitionError::NameNotOfType {
            name: "Done".into(),
            to: StateType::Completed,
        });
        assert_eq!(name.kind, ErrorKind::BadRequest);
        assert_eq!(name.field.as_deref(), Some("name"));
        assert_eq!(
            name.message,
            "name: \"Done\" is not a name of a COMPLETED state; leave it out or use Completed"
        );
        let final_state = ApiError::from(TransitionError::Final {
            run: "r1".into(),
            state: StateType::Failed,
        });
        assert_eq!(
            final_state,
            ApiError::conflict("flow run r1 is FAILED, which is final")
        );
        let not_allowed = ApiError::from(TransitionError::NotAllowed {
            run: "r1".into(),
            from: StateType::Running,
            to: StateType::Scheduled,
        });
        assert_eq!(
            not_allowed,
            ApiError::conflict_on("type", "cannot move flow run r1 from RUNNING to SCHEDULED")
        );
        let cursor = ApiError::from(StoreError::BadCursor);
        assert_eq!(cursor.kind, ErrorKind::BadRequest);
        assert_eq!(cursor.field.as_deref(), Some("cursor"));
        for (store, kind) in [
            (StoreError::Unavailable("x".into()), ErrorKind::Unavailable),
            (
                StoreError::OutcomeUnknown("x".into()),
                ErrorKind::OutcomeUnknown,
            ),
            (
                StoreError::DiskFull("x".into()),
                ErrorKind::InsufficientStorage,
            ),
            (StoreError::Corrupt("x".into()), ErrorKind::Internal),
            (StoreError::internal("x"), ErrorKind::Internal),
        ] {
            assert_eq!(ApiError::from(store).kind, kind);
        }
    }
}
