//! The control plane's records, as stored and as served. Plain data: the rules
//! live in `orchestration`, the storage in `store`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type Timestamp = DateTime<Utc>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkPool {
    pub name: String,
    #[serde(rename = "type")]
    pub pool_type: String,
    #[serde(default)]
    pub description: String,
    pub base_job_template: Value,
    pub concurrency_limit: Option<u32>,
    pub paused: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PoolStatus {
    NotReady,
    Ready,
    Paused,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkQueue {
    pub pool: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub priority: u32,
    pub concurrency_limit: Option<u32>,
    pub paused: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_polled: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueStatus {
    NotReady,
    Ready,
    Paused,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Worker {
    pub pool: String,
    pub name: String,
    pub heartbeat_interval_seconds: u32,
    #[schema(value_type = String, format = DateTime)]
    pub last_heartbeat: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerStatus {
    Online,
    Offline,
}

/// A missed heartbeat is forgiven twice; the third makes a worker OFFLINE.
pub const MISSED_HEARTBEATS_OFFLINE: u32 = 3;

impl Worker {
    pub fn status(&self, now: Timestamp) -> WorkerStatus {
        let allowed = chrono::Duration::seconds(i64::from(
            self.heartbeat_interval_seconds * MISSED_HEARTBEATS_OFFLINE,
        ));
        if now - self.last_heartbeat <= allowed {
            WorkerStatus::Online
        } else {
            WorkerStatus::Offline
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Schedule {
    /// Every this many seconds from `anchor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// A cron expression, evaluated in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub anchor: Option<Timestamp>,
    #[serde(default = "default_true")]
    pub active: bool,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Deployment {
    pub id: String,
    pub flow: String,
    pub name: String,
    pub pool: String,
    pub queue: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub job_variables: Map<String, Value>,
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    pub concurrency_limit: Option<u32>,
    #[serde(default)]
    pub paused: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

impl Deployment {
    /// `flow/name`, how people and URLs name a deployment.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.flow, self.name)
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateType {
    Scheduled,
    Pending,
    Running,
    Completed,
    Failed,
    Crashed,
    Cancelling,
    Cancelled,
}

impl StateType {
    pub const ALL: [StateType; 8] = [
        StateType::Scheduled,
        StateType::Pending,
        StateType::Running,
        StateType::Completed,
        StateType::Failed,
        StateType::Crashed,
        StateType::Cancelling,
        StateType::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateType::Completed | StateType::Failed | StateType::Crashed | StateType::Cancelled
        )
    }

    /// Holds a slot of the pool, queue, deployment and worker limits.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            StateType::Pending | StateType::Running | StateType::Cancelling
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateType::Scheduled => "SCHEDULED",
            StateType::Pending => "PENDING",
            StateType::Running => "RUNNING",
            StateType::Completed => "COMPLETED",
            StateType::Failed => "FAILED",
            StateType::Crashed => "CRASHED",
            StateType::Cancelling => "CANCELLING",
            StateType::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<StateType> {
        let upper = text.to_ascii_uppercase();
        StateType::ALL.into_iter().find(|s| s.as_str() == upper)
    }

    /// The display name of a fresh state of this type.
    pub fn default_name(self) -> &'static str {
        match self {
            StateType::Scheduled => "Scheduled",
            StateType::Pending => "Pending",
            StateType::Running => "Running",
            StateType::Completed => "Completed",
            StateType::Failed => "Failed",
            StateType::Crashed => "Crashed",
            StateType::Cancelling => "Cancelling",
            StateType::Cancelled => "Cancelled",
        }
    }
}

impl std::fmt::Display for StateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct State {
    #[serde(rename = "type")]
    pub state_type: StateType,
    /// "Scheduled" or "Late" for SCHEDULED; "Disconnected" for an active run
    /// whose worker went silent (`orchestration::DISCONNECTED`); otherwise
    /// the type's name.
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl State {
    pub fn new(state_type: StateType, now: Timestamp) -> State {
        State {
            state_type,
            name: state_type.default_name().into(),
            timestamp: now,
            message: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FlowRun {
    pub id: String,
    pub name: String,
    pub deployment_id: String,
    /// `flow/name` of the deployment.
    pub deployment: String,
    pub pool: String,
    pub queue: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// This run's own overrides; merged with the pool's and deployment's at claim.
    #[serde(default)]
    pub job_variables: Map<String, Value>,
    #[schema(value_type = String, format = DateTime)]
    pub scheduled_at: Timestamp,
    pub state: State,
    #[serde(default)]
    pub history: Vec<State>,
    /// The worker that claimed it, while it holds it.
    #[serde(default)]
    pub worker: Option<String>,
    /// Until when the claim is held without news from the worker.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_until: Option<Timestamp>,
    #[serde(default)]
    pub infrastructure_handle: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Created by the scheduler rather than by a person.
    #[serde(default)]
    pub auto_scheduled: bool,
    /// Idempotency keys of the last transitions, newest last.
    #[serde(default)]
    pub transition_keys: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LogLine {
    pub seq: u64,
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
    #[serde(default = "default_stream")]
    pub stream: String,
    pub message: String,
}

fn default_stream() -> String {
    "stdout".into()
}

/// What a worker gets for each claimed run: everything it needs to start it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimedRun {
    pub flow_run: FlowRun,
    pub deployment: Deployment,
    pub pool_type: String,
    pub base_job_template: Value,
    /// Pool defaults < deployment < run, with `env` merged key by key.
    pub job_variables: Map<String, Value>,
    /// The pool's job configuration with `job_variables` substituted.
    pub job_configuration: Value,
}

/// What a named API token may do (`server::access` holds which routes each
/// role reaches).
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: pools, templates, queues, tokens, deployments, runs.
    Admin,
    /// Deployments and their runs in its pools: create, run, cancel.
    Deployer,
    /// Claims, heartbeats, states and logs in its pools, under its own name.
    Worker,
    /// Reads only.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Deployer, Role::Worker, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Worker => "worker",
            Role::Viewer => "viewer",
        }
    }

    /// Whether its tokens name the pools they cover (deployers and workers).
    pub fn scoped_to_pools(self) -> bool {
        matches!(self, Role::Deployer | Role::Worker)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named API token as stored: never its secret, only a keyed hash of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    /// The pools a deployer or worker token covers; empty for the others.
    #[serde(default)]
    pub pools: Vec<String>,
    pub created: Timestamp,
    /// HMAC-SHA256 of the secret under the store's token key, in hex.
    pub hash: String,
}
