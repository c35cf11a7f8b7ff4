//! The two AWS APIs the plugin speaks, both AWS JSON 1.1: a POST to `/`
//! naming the operation in `X-Amz-Target`. The host signs each request with
//! SigV4 from the grant; nothing here sees a key.

use host_plugin_sdk::Error;
use host_plugin_sdk::http::{Client, HttpError};
use serde_json::Value;
use std::time::Duration;

const ECS_TARGET: &str = "AmazonEC2ContainerServiceV20141113";
const LOGS_TARGET: &str = "Logs_20140328";

/// One AWS JSON API at one endpoint.
pub struct Api {
    client: Client,
    prefix: &'static str,
    endpoint: String,
}

/// An error AWS answered with (`__type` and `message`), or no answer.
#[derive(Debug)]
pub enum ApiError {
    Aws {
        status: u16,
        kind: String,
        message: String,
    },
    Http(HttpError),
}

impl ApiError {
    /// The short exception name, e.g. `ClientException`.
    pub fn kind(&self) -> &str {
        match self {
            ApiError::Aws { kind, .. } => kind,
            ApiError::Http(_) => "",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            ApiError::Aws { status, kind, .. } => {
                // AWS throttles with a 400 and an exception name, not a 429.
                *status == 429
                    || *status >= 500
                    || kind.contains("Throttl")
                    || kind == "ServerException"
                    || kind == "ServiceUnavailableException"
            }
            ApiError::Http(e) => e.is_retryable(),
        }
    }

    /// Into the contract's error, saying which call failed.
    pub fn during(self, what: &str) -> Error {
        let retryable = self.retryable();
        let message = match &self {
            ApiError::Aws { kind, message, .. } => format!("{what}: {kind}: {message}"),
            ApiError::Http(e) => format!("{what}: {e}"),
        };
        if retryable {
            Error::retryable(message)
        } else {
            Error::fatal(message)
        }
    }
}

impl Api {
    pub fn ecs(endpoint: &str) -> Api {
        Api::new(endpoint, ECS_TARGET)
    }

    pub fn logs(endpoint: &str) -> Api {
        Api::new(endpoint, LOGS_TARGET)
    }

    fn new(endpoint: &str, prefix: &'static str) -> Api {
        let mut client = Client::new(endpoint);
        // Polls run for hours: a slow endpoint should fail one poll, not hang.
        client.timeout = Some(Duration::from_secs(20));
        Api {
            client,
            prefix,
            endpoint: endpoint.to_string(),
        }
    }

    /// One operation, retried by the client on no answer, 429 and 5xx.
    pub fn call(&self, operation: &str, body: &Value) -> Result<Value, ApiError> {
        let request = self
            .client
            .request("POST", "/")
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", &format!("{}.{operation}", self.prefix))
            .body(body.to_string());
        let response = self.client.send(&request).map_err(ApiError::Http)?;
        let parsed: Value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body)
                .unwrap_or_else(|_| Value::String(response.text()))
        };
        if response.is_success() {
            return Ok(parsed);
        }
        // `__type` may be `com.amazonaws...#ClientException` or plain.
        let kind = parsed
            .get("__type")
            .and_then(Value::as_str)
            .or_else(|| response.header("x-amzn-errortype"))
            .unwrap_or("UnknownError");
        let kind = kind.rsplit('#').next().unwrap_or(kind);
        let kind = kind.split(':').next().unwrap_or(kind).to_string();
        let message = parsed
            .get("message")
            .or_else(|| parsed.get("Message"))
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| {
                let mut text = response.text();
                text.truncate(text.floor_char_boundary(300));
                text
            });
        Err(ApiError::Aws {
            status: response.status,
            kind,
            message: format!(
                "{message} (HTTP {} from {})",
                response.status, self.endpoint
            ),
        })
    }
}

impl Api {
    /// One operation, one attempt: for calls that are not idempotent.
    pub fn call_once(&self, operation: &str, body: &Value) -> Result<Value, ApiError> {
        let mut once = Api {
            client: self.client.clone(),
            prefix: self.prefix,
            endpoint: self.endpoint.clone(),
        };
        once.client.max_attempts = 1;
        once.call(operation, body)
    }
}
