//! Prometheus metrics, in the text format, through `prometheus-client`:
//! [`ServerMetrics`] for `host serve`'s `/metrics`, [`WorkerMetrics`] for the
//! worker's health port, and [`PluginCallMetrics`], which the plugin runtime
//! records into wherever it runs.
//!
//! Counters and histograms are updated as things happen; the gauges that
//! describe stored state (runs by pool and state, workers online) are read
//! from the store at scrape time, so they are never out of step with it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

/// prometheus-client writes OpenMetrics text, which Prometheus scrapes natively.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition as an HTTP answer, for the server's and the worker's `/metrics`.
pub fn response(text: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    pool: String,
    /// `runs` (something claimed), `empty`, or `error`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallErrorLabels {
    plugin: String,
    call: &'static str,
    /// `error` (an error value), `trap`, `cpu_budget`, `memory`,
    /// `instantiate`, `deadline` or `contract`.
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What the stored state looks like now, for the scrape-time gauges.
pub struct StoredState {
    /// `(pool, state) → count`.
    pub runs: std::collections::BTreeMap<(String, String), u64>,
    pub workers_online: Vec<(String, u64)>,
}

pub struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    claims: Family<ClaimLabels, Counter>,
    claimed_runs: Family<PoolLabels, Counter>,
    claim_seconds: Family<PoolLabels, Histogram>,
    runs: Family<RunLabels, Gauge>,
    workers_online: Family<PoolLabels, Gauge>,
    /// One scrape at a time: the gauges are cleared and refilled per scrape.
    scrape: Mutex<()>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("host");
        let requests = Family::default();
        let claims = Family::default();
        let claimed_runs = Family::default();
        let claim_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let runs = Family::default();
        let workers_online = Family::default();
        registry.register(
            "http_requests",
            "API requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "claims",
            "Claim requests by pool and outcome",
            claims.clone(),
        );
        registry.register(
            "claimed_runs",
            "Runs handed to workers",
            claimed_runs.clone(),
        );
        registry.register(
            "claim_duration_seconds",
            "Time to answer a claim (a long-poll's wait included)",
            claim_seconds.clone(),
        );
        registry.register(
            "flow_runs",
            "Stored flow runs by pool and state",
            runs.clone(),
        );
        registry.register(
            "workers_online",
            "Workers of each pool that heartbeat recently",
            workers_online.clone(),
        );
        ServerMetrics {
            registry,
            requests,
            claims,
            claimed_runs,
            claim_seconds,
            runs,
            workers_online,
            scrape: Mutex::new(()),
        }
    }
}

impl ServerMetrics {
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// One answered claim: `claimed` runs (`None` when it failed).
    pub fn claim(&self, pool: &str, claimed: Option<usize>, took: Duration) {
        let outcome = match claimed {
            None => "error",
            Some(0) => "empty",
            Some(_) => "runs",
        };
        let labels = PoolLabels {
            pool: pool.to_string(),
        };
        self.claims
            .get_or_create(&ClaimLabels {
                pool: pool.to_string(),
                outcome,
            })
            .inc();
        if let Some(claimed) = claimed.filter(|n| *n > 0) {
            self.claimed_runs
                .get_or_create(&labels)
                .inc_by(claimed as u64);
        }
        self.claim_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges set from `state`.
    pub fn encode(&self, state: StoredState) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.runs.clear();
        for ((pool, state), count) in state.runs {
            self.runs
                .get_or_create(&RunLabels { pool, state })
                .set(count as i64);
        }
        self.workers_online.clear();
        for (pool, online) in state.workers_online {
            self.workers_online
                .get_or_create(&PoolLabels { pool })
                .set(online as i64);
        }
        encode(&self.registry)
    }
}

/// Plugin call latency and failures, recorded by the runtime.
#[derive(Clone)]
pub struct PluginCallMetrics {
    seconds: Family<CallLabels, Histogram>,
    errors: Family<CallErrorLabels, Counter>,
}

impl Default for PluginCallMetrics {
    fn default() -> Self {
        PluginCallMetrics {
            seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            errors: Family::default(),
        }
    }
}

impl PluginCallMetrics {
    /// One finished call, however it ended.
    pub fn observe(&self, plugin: &str, call: &'static str, took: Duration) {
        let plugin = plugin.to_string();
        self.seconds
            .get_or_create(&CallLabels { plugin, call })
            .observe(took.as_secs_f64());
    }

    /// One failed call; `kind` names how it failed.
    pub fn failed(&self, plugin: &str, call: &'static str, kind: &'static str) {
        let plugin = plugin.to_string();
        self.errors
            .get_or_create(&CallErrorLabels { plugin, call, kind })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "plugin_call_duration_seconds",
            "Plugin calls by plugin and call (`wait` lasts as long as the run)",
            self.seconds.clone(),
        );
        registry.register(
            "plugin_call_errors",
            "Failed plugin calls by kind: error values, traps, spent budgets, deadlines",
            self.errors.clone(),
        );
    }
}

pub struct WorkerMetrics {
    registry: Registry,
    runs_in_flight: Gauge,
    runs_started: Counter,
}

impl WorkerMetrics {
    pub fn new(plugin_calls: &PluginCallMetrics) -> WorkerMetrics {
        let mut registry = Registry::with_prefix("host_worker");
        let runs_in_flight = Gauge::default();
        let runs_started = Counter::default();
        registry.register(
            "runs_in_flight",
            "Runs this worker is provisioning, watching or tearing down",
            runs_in_flight.clone(),
        );
        registry.register(
            "runs_started",
            "Runs this worker took on (claimed, recovered or adopted)",
            runs_started.clone(),
        );
        plugin_calls.register(&mut registry);
        WorkerMetrics {
            registry,
            runs_in_flight,
            runs_started,
        }
    }

    /// Counts a run in flight until the guard is dropped.
    pub fn run_in_flight(&self) -> InFlight {
        self.runs_started.inc();
        self.runs_in_flight.inc();
        InFlight(self.runs_in_flight.clone())
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// Decrements the in-flight gauge when the run is done, however it ends.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}
