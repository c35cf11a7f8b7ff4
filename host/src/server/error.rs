//! The one mapping from the control plane's errors to HTTP: a kind's status,
//! the wire form `{"error", "field"}`, `x-host-not-written` on a 503, and
//! what a client may see of an internal error. Everything that answers an
//! error (API handlers, extractors, the guard, UI pages and forms) goes
//! through here.

use crate::error::{ApiError, ErrorBody, ErrorKind};
use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error as a client may see it. An internal error's message names
/// files, SQL and library internals that are the operator's business: it is
/// logged in full under a fresh id, and the client gets the id to quote.
pub fn disclosed(error: ApiError) -> ApiError {
    if error.kind != ErrorKind::Internal {
        return error;
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    tracing::error!(error_id = %id, error = %error.message, "internal error");
    ApiError {
        message: format!("internal error (id {id})"),
        field: None,
        ..error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = disclosed(self);
        let mut response = (status(error.kind), Json(ErrorBody::from(&error))).into_response();
        if error.kind == ErrorKind::Unavailable {
            // Said only where nothing was done: a replica relaying a write
            // (and a client with several URLs) may then make it elsewhere.
            response.headers_mut().insert(
                crate::client::NOT_WRITTEN_HEADER,
                HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> ErrorBody {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("an error body")
    }

    #[tokio::test]
    async fn a_500_names_an_id_and_keeps_the_inner_message_to_the_log() {
        let inner = crate::store::StoreError::Corrupt(
            "corrupt record: expected value at line 1 column 1 in /var/lib/host.redb".into(),
        );
        let response = ApiError::from(inner).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(response).await;
        assert!(!body.error.contains("corrupt"), "{}", body.error);
        assert!(!body.error.contains("host.redb"), "{}", body.error);
        let id = body
            .error
            .strip_prefix("internal error (id ")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no id in {:?}", body.error));
        assert_eq!(id.len(), 12, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(body.field, None);
    }

    #[tokio::test]
    async fn other_errors_keep_their_message_field_and_status() {
        let response = ApiError::bad_request("limit", "limit: too big").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_of(response).await;
        assert_eq!(body.error, "limit: too big");
        assert_eq!(body.field.as_deref(), Some("limit"));

        let unavailable =
            ApiError::from(crate::store::StoreError::Unavailable("away".into())).into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unavailable.headers().get(crate::client::NOT_WRITTEN_HEADER),
            Some(&HeaderValue::from_static("1"))
        );
        let unknown = ApiError::from(crate::store::StoreError::OutcomeUnknown("no answer".into()))
            .into_response();
        assert_eq!(unknown.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(
            unknown
                .headers()
                .get(crate::client::NOT_WRITTEN_HEADER)
                .is_none()
        );
    }
}
