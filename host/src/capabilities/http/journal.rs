//! What each run's calls sent, kept only when the runtime is asked to
//! (`RuntimeConfig::record_http`, which `host plugin test` sets): the
//! conformance suite reads it to check that `start` tags what it makes with
//! the flow run id. The host cannot see which remote resource a request
//! makes, so the contract asks plugins to carry the id on them, and this is
//! how the suite holds them to it without knowing any platform's API.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::sync::Mutex;
use wasmtime_wasi_http::{Error, WasiBody};

/// One request as sent, with whether it carried the flow run id anywhere
/// the remote side keeps: its path and query, its headers or its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    pub method: String,
    /// `scheme://authority/path?query`.
    pub url: String,
    pub carries_run_id: bool,
}

impl SentRequest {
    /// Whether it can make or change something remote.
    pub fn writes(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

#[derive(Default)]
pub struct Journal {
    runs: Mutex<HashMap<String, Vec<SentRequest>>>,
}

impl Journal {
    /// Notes `request` for `run`, reading its body whole (at most `limit`
    /// bytes, as sending would) and handing back an equal request.
    pub async fn record(
        &self,
        run: &str,
        request: Request<WasiBody>,
        limit: u64,
    ) -> Result<Request<WasiBody>, Error> {
        let (parts, body) = request.into_parts();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let body: Bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(Some(limit as u64)))?
            .to_bytes();
        let needle = run.as_bytes();
        let contains = |haystack: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        let carries_run_id = contains(parts.uri.to_string().as_bytes())
            || parts.headers.values().any(|v| contains(v.as_bytes()))
            || contains(&body);
        let sent = SentRequest {
            method: parts.method.to_string(),
            url: parts.uri.to_string(),
            carries_run_id,
        };
        if let Ok(mut runs) = self.runs.lock() {
            runs.entry(run.to_string()).or_default().push(sent);
        }
        let body = Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync();
        Ok(Request::from_parts(parts, body))
    }

    pub fn sent(&self, run: &str) -> Vec<SentRequest> {
        self.runs
            .lock()
            .map(|runs| runs.get(run).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn forget(&self, run: &str) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(run);
        }
    }
}
