//! `wasi:http/outgoing-handler`: outbound HTTP for plugins, the standard
//! WASI 0.2 interface (so any wasip2 HTTP client works in a plugin), linked
//! only when granted, and reaching only the origins the grant lists.
//!
//! wasmtime-wasi-http hands every request the guest makes to one hook,
//! [`WasiHttpHooks::send_request`]; ours checks the allow-list, the
//! in-flight cap and the call's run, then sends through `send.rs` (our own
//! path: per-entry TLS trust and client certificate, deadlines far below
//! wasmtime's 600 s, a response cap) after adding the entry's credentials.
//! The credentials never enter the guest: the headers that carry them are
//! forbidden to it both ways, so it can neither set nor read them.
//!
//! `policy` is what a grant says, `tls` an entry's trust, `aws` SigV4,
//! `journal` what a run sent (for `host plugin test`).

mod aws;
mod aws_env;
mod journal;
mod policy;
mod send;
mod tls;

pub use aws_env::AwsEndpoints;
pub use journal::{Journal, SentRequest};
pub use policy::{Auth, Endpoint, HttpGrantError, HttpPolicy};

use super::{CallScope, HostCapability, Setup};
use crate::runtime::PluginState;
use http::HeaderName;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView,
    WasiHttpHooks, WasiHttpView,
};

/// The headers that carry the host's credentials: a guest can set none of
/// them on a request, and none of them reaches it on a response.
pub const HOST_HELD_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

pub(crate) struct Http;

impl HostCapability for Http {
    const INTERFACE: &'static str = "http";
    const STANDARD_PACKAGE: Option<&'static str> = Some("wasi:http");
    /// What runs sent, when the runtime records it.
    type Shared = Option<Arc<Journal>>;
    type Scoped = HttpScope;

    fn init(setup: &Setup<'_>) -> anyhow::Result<Option<Arc<Journal>>> {
        Ok(setup.config.record_http.then(Arc::default))
    }

    fn link(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }

    fn scope(journal: &Option<Arc<Journal>>, call: &CallScope<'_>) -> HttpScope {
        let policy = call.grants.http_policy().clone();
        HttpScope {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                plugin: call.plugin.to_string(),
                run: call.run.map(String::from),
                in_flight: Arc::new(Semaphore::new(policy.max_concurrent)),
                policy,
                journal: journal.clone(),
            },
        }
    }

    async fn release(journal: &Option<Arc<Journal>>, run: &str) -> Vec<String> {
        if let Some(journal) = journal {
            journal.forget(run);
        }
        Vec::new()
    }
}

/// One call's HTTP state: wasmtime-wasi-http's context and our hooks.
pub struct HttpScope {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (scopes, table) = self.scopes_and_table();
        WasiHttpCtxView {
            ctx: &mut scopes.http.ctx,
            table,
            hooks: &mut scopes.http.hooks,
        }
    }
}

struct Hooks {
    plugin: String,
    /// `None` for `describe` and `validate`, which no capability serves.
    run: Option<String>,
    policy: Arc<HttpPolicy>,
    /// Requests of this call in flight (a permit lives until the response
    /// body is read or dropped).
    in_flight: Arc<Semaphore>,
    journal: Option<Arc<Journal>>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)>;

impl WasiHttpHooks for Hooks {
    fn is_forbidden_header(&mut self, name: &HeaderName) -> bool {
        DEFAULT_FORBIDDEN_HEADERS.contains(name) || HOST_HELD_HEADERS.contains(&name.as_str())
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        // wasmtime spawns the returned future on a task of its own: it
        // carries this span, a child of the call's `plugin_call` span.
        let span = tracing::info_span!(
            "http_request",
            plugin = %self.plugin,
            flow_run_id = self.run.as_deref(),
            method = %request.method(),
            scheme = uri.scheme_str().unwrap_or_default(),
            host,
            status = tracing::field::Empty,
        );
        let refuse = |error: Error| -> Box<dyn Future<Output = SendResult> + Send> {
            Box::new(async move { Err(error) })
        };
        if self.run.is_none() {
            tracing::warn!(parent: &span, "HTTP request denied: describe and validate get no capability");
            return refuse(Error::HttpRequestDenied);
        }
        let Some(endpoint) = self.policy.find(uri).cloned() else {
            tracing::warn!(parent: &span, "HTTP request denied: not a granted origin");
            return refuse(Error::HttpRequestDenied);
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(
                parent: &span,
                limit = self.policy.max_concurrent,
                "HTTP request refused: too many in flight"
            );
            return refuse(Error::ConnectionLimitReached);
        };
        let (journal, run) = (self.journal.clone(), self.run.clone().unwrap_or_default());
        let reports_to = span.clone();
        let sent = async move {
            let request = match journal {
                Some(journal) => {
                    journal
                        .record(&run, request, endpoint.max_request_bytes)
                        .await?
                }
                None => request,
            };
            send::send(endpoint, request, options, permit, reports_to).await
        };
        Box::new(sent.instrument(span))
    }
}
