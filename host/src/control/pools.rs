//! Work pools, their queues and their workers.
//!
//! A worker is a (pool, name) pair, as in Prefect: the same name in two
//! pools is two workers. A heartbeat under the name of a worker that is
//! ONLINE may not change its `heartbeat_interval_seconds`: heartbeats carry
//! no proof of who sends them, and a ghost setting a long interval would
//! keep a dead worker's runs from being crashed.

use super::names::check_user_name;
use super::{Control, double_option, now};
use crate::error::ApiError;
use crate::model::{PoolStatus, QueueStatus, Timestamp, WorkPool, WorkQueue, Worker, WorkerStatus};
use crate::store::Records;
use crate::template;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A queue polled within this long counts as READY.
const QUEUE_READY_WITHIN_SECONDS: i64 = 60;

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub pool_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub base_job_template: Option<Value>,
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolPatch {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub base_job_template: Option<Value>,
    /// Absent: unchanged; `null`: no limit. A client leaving it alone must
    /// not send it at all (`skip_serializing_if`): `null` would clear it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub concurrency_limit: Option<Option<u32>>,
    #[serde(default)]
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolView {
    #[serde(flatten)]
    pub pool: WorkPool,
    pub status: PoolStatus,
    pub workers_online: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub priority: Option<u32>,
    /// Absent: unchanged; `null`: no limit. A client leaving it alone must
    /// not send it at all (`skip_serializing_if`): `null` would clear it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub concurrency_limit: Option<Option<u32>>,
    #[serde(default)]
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueView {
    #[serde(flatten)]
    pub queue: WorkQueue,
    pub status: QueueStatus,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerHeartbeat {
    pub name: String,
    #[serde(default = "default_heartbeat_interval")]
    #[schema(minimum = 1, maximum = 3600)]
    pub heartbeat_interval_seconds: u32,
}

fn default_heartbeat_interval() -> u32 {
    30
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerView {
    #[serde(flatten)]
    pub worker: Worker,
    pub status: WorkerStatus,
}

/// Checks a base job template's shape and that every placeholder is declared.
pub fn check_template(template: &Value) -> Result<(), ApiError> {
    let field = "base_job_template";
    let job_configuration = template
        .get("job_configuration")
        .filter(|v| v.is_object())
        .ok_or_else(|| {
            ApiError::bad_request(
                field,
                "base_job_template: needs a `job_configuration` object",
            )
        })?;
    let variables = template
        .get("variables")
        .filter(|v| v.is_object())
        .ok_or_else(|| {
            ApiError::bad_request(
                field,
                "base_job_template: needs a `variables` object (JSON Schema)",
            )
        })?;
    if let Some(properties) = variables.get("properties")
        && !properties.is_object()
    {
        return Err(ApiError::bad_request(
            field,
            "base_job_template: variables.properties must be an object",
        ));
    }
    super::schema::check_variables_schema("base_job_template.variables", variables)?;
    let undeclared = template::undeclared(job_configuration, variables);
    if !undeclared.is_empty() {
        return Err(ApiError::bad_request(
            field,
            format!(
                "base_job_template: placeholders not declared in variables: {}",
                undeclared.join(", ")
            ),
        ));
    }
    Ok(())
}

fn pool_view(pool: WorkPool, workers: &[Worker], now: Timestamp) -> PoolView {
    let workers_online = workers
        .iter()
        .filter(|w| w.status(now) == WorkerStatus::Online)
        .count();
    let status = if pool.paused {
        PoolStatus::Paused
    } else if workers_online > 0 {
        PoolStatus::Ready
    } else {
        PoolStatus::NotReady
    };
    PoolView {
        pool,
        status,
        workers_online,
    }
}

fn queue_view(queue: WorkQueue, now: Timestamp) -> QueueView {
    let status = if queue.paused {
        QueueStatus::Paused
    } else if queue
        .last_polled
        .is_some_and(|t| (now - t).num_seconds() <= QUEUE_READY_WITHIN_SECONDS)
    {
        QueueStatus::Ready
    } else {
        QueueStatus::NotReady
    };
    QueueView { queue, status }
}

pub(super) fn pool_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("work pool `{name}` does not exist"))
}

/// Moves other queues down so `priority` is free, keeping priorities unique.
fn make_room(
    w: &mut crate::store::Writer<'_>,
    pool: &str,
    except: &str,
    priority: u32,
) -> Result<(), ApiError> {
    let mut taken = priority;
    for mut queue in w.queues(pool)?.into_iter().filter(|q| q.name != except) {
        if queue.priority == taken {
            taken += 1;
            queue.priority = taken;
            w.put_queue(&queue)?;
        }
    }
    Ok(())
}

impl Control {
    pub async fn create_pool(&self, spec: PoolSpec) -> Result<PoolView, ApiError> {
        check_user_name("name", &spec.name)?;
        let template = match spec.base_job_template {
            Some(template) => {
                self.catalog.default_template(&spec.pool_type)?;
                check_template(&template)?;
                template
            }
            None => self.catalog.default_template(&spec.pool_type)?.clone(),
        };
        let now = now();
        let pool = WorkPool {
            name: spec.name,
            pool_type: spec.pool_type,
            description: spec.description,
            base_job_template: template,
            concurrency_limit: spec.concurrency_limit,
            paused: spec.paused,
            created: now,
            updated: now,
        };
        let stored = pool.clone();
        self.write(move |w| {
            if w.pool(&stored.name)?.is_some() {
                return Err(ApiError::conflict_on(
                    "name",
                    format!("work pool `{}` already exists", stored.name),
                ));
            }
            w.put_pool(&stored)?;
            w.put_queue(&WorkQueue {
                pool: stored.name.clone(),
                name: "default".into(),
                description: "The pool's default queue".into(),
                priority: 1,
                concurrency_limit: None,
                paused: false,
                last_polled: None,
                created: now,
            })?;
            Ok(())
        })
        .await?;
        Ok(pool_view(pool, &[], now))
    }

    /// Stored runs by pool and state, for the metrics: `(pool, state) → count`.
    pub fn run_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<(String, String), u64>, ApiError> {
        self.read(|r| Ok(r.run_counts()?))
    }

    pub fn pools(&self) -> Result<Vec<PoolView>, ApiError> {
        let now = now();
        self.read(|r| {
            r.pools()?
                .into_iter()
                .map(|pool| {
                    let workers = r.workers(&pool.name)?;
                    Ok(pool_view(pool, &workers, now))
                })
                .collect()
        })
    }

    pub fn pool(&self, name: &str) -> Result<PoolView, ApiError> {
        let now = now();
        self.read(|r| {
            let pool = r.pool(name)?.ok_or_else(|| pool_not_found(name))?;
            let workers = r.workers(name)?;
            Ok(pool_view(pool, &workers, now))
        })
    }

    pub async fn update_pool(&self, name: &str, patch: PoolPatch) -> Result<PoolView, ApiError> {
        if let Some(template) = &patch.base_job_template {
            check_template(template)?;
        }
        let name = name.to_string();
        let now = now();
        let (pool, workers) = self
            .write(move |w| {
                let mut pool = w.pool(&name)?.ok_or_else(|| pool_not_found(&name))?;
                if let Some(description) = patch.description {
                    pool.description = description;
                }
                if let Some(template) = patch.base_job_template {
                    pool.base_job_template = template;
                }
                if let Some(limit) = patch.concurrency_limit {
                    pool.concurrency_limit = limit;
                }
                if let Some(paused) = patch.paused {
                    pool.paused = paused;
                }
                pool.updated = now;
                w.put_pool(&pool)?;
                Ok((pool, w.workers(&name)?))
            })
            .await?;
        // Resuming may make runs claimable.
        self.changed();
        Ok(pool_view(pool, &workers, now))
    }

    pub async fn delete_pool(&self, name: &str) -> Result<(), ApiError> {
        let name = name.to_string();
        self.write(move |w| {
            w.pool(&name)?.ok_or_else(|| pool_not_found(&name))?;
            let users: Vec<String> = w
                .deployments()?
                .into_iter()
                .filter(|d| d.pool == name)
                .map(|d| d.full_name())
                .collect();
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "work pool `{name}` is used by deployments: {}; delete them first",
                    users.join(", ")
                )));
            }
            Ok(w.delete_pool(&name)?)
        })
        .await
    }

    pub async fn create_queue(&self, pool: &str, spec: QueueSpec) -> Result<QueueView, ApiError> {
        check_user_name("name", &spec.name)?;
        if spec.priority == Some(0) {
            return Err(ApiError::bad_request(
                "priority",
                "priority: 1 is the highest; 0 is not allowed",
            ));
        }
        let pool = pool.to_string();
        let now = now();
        let queue = self
            .write(move |w| {
                w.pool(&pool)?.ok_or_else(|| pool_not_found(&pool))?;
                if w.queue(&pool, &spec.name)?.is_some() {
                    return Err(ApiError::conflict_on(
                        "name",
                        format!("work queue `{}` already exists in `{pool}`", spec.name),
                    ));
                }
                let lowest = w
                    .queues(&pool)?
                    .iter()
                    .map(|q| q.priority)
                    .max()
                    .unwrap_or(0);
                let priority = spec.priority.unwrap_or(lowest + 1);
                make_room(w, &pool, &spec.name, priority)?;
                let queue = WorkQueue {
                    pool,
                    name: spec.name,
                    description: spec.description,
                    priority,
                    concurrency_limit: spec.concurrency_limit,
                    paused: spec.paused,
                    last_polled: None,
                    created: now,
                };
                w.put_queue(&queue)?;
                Ok(queue)
            })
            .await?;
        Ok(queue_view(queue, now))
    }

    pub fn queues(&self, pool: &str) -> Result<Vec<QueueView>, ApiError> {
        let now = now();
        self.read(|r| {
            r.pool(pool)?.ok_or_else(|| pool_not_found(pool))?;
            Ok(r.queues(pool)?
                .into_iter()
                .map(|q| queue_view(q, now))
                .collect())
        })
    }

    pub fn queue(&self, pool: &str, name: &str) -> Result<QueueView, ApiError> {
        let now = now();
        self.read(|r| {
            r.pool(pool)?.ok_or_else(|| pool_not_found(pool))?;
            let queue = r.queue(pool, name)?.ok_or_else(|| {
                ApiError::not_found(format!("work queue `{name}` does not exist in `{pool}`"))
            })?;
            Ok(queue_view(queue, now))
        })
    }

    pub async fn update_queue(
        &self,
        pool: &str,
        name: &str,
        patch: QueuePatch,
    ) -> Result<QueueView, ApiError> {
        if patch.priority == Some(0) {
            return Err(ApiError::bad_request(
                "priority",
                "priority: 1 is the highest; 0 is not allowed",
            ));
        }
        let (pool, name) = (pool.to_string(), name.to_string());
        let now = now();
        let queue = self
            .write(move |w| {
                w.pool(&pool)?.ok_or_else(|| pool_not_found(&pool))?;
                let mut queue = w.queue(&pool, &name)?.ok_or_else(|| {
                    ApiError::not_found(format!("work queue `{name}` does not exist in `{pool}`"))
                })?;
                if let Some(priority) = patch.priority {
                    make_room(w, &pool, &name, priority)?;
                    queue.priority = priority;
                }
                if let Some(description) = patch.description {
                    queue.description = description;
                }
                if let Some(limit) = patch.concurrency_limit {
                    queue.concurrency_limit = limit;
                }
                if let Some(paused) = patch.paused {
                    queue.paused = paused;
                }
                w.put_queue(&queue)?;
                Ok(queue)
            })
            .await?;
        self.changed();
        Ok(queue_view(queue, now))
    }

    pub async fn delete_queue(&self, pool: &str, name: &str) -> Result<(), ApiError> {
        if name == "default" {
            return Err(ApiError::conflict(
                "the `default` queue belongs to its pool and cannot be deleted",
            ));
        }
        let (pool, name) = (pool.to_string(), name.to_string());
        self.write(move |w| {
            w.queue(&pool, &name)?.ok_or_else(|| {
                ApiError::not_found(format!("work queue `{name}` does not exist in `{pool}`"))
            })?;
            let users: Vec<String> = w
                .deployments()?
                .into_iter()
                .filter(|d| d.pool == pool && d.queue == name)
                .map(|d| d.full_name())
                .collect();
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "work queue `{name}` is used by deployments: {}",
                    users.join(", ")
                )));
            }
            Ok(w.delete_queue(&pool, &name)?)
        })
        .await
    }

    pub async fn heartbeat(
        &self,
        pool: &str,
        beat: WorkerHeartbeat,
    ) -> Result<WorkerView, ApiError> {
        super::names::check_name("name", &beat.name)?;
        if beat.heartbeat_interval_seconds == 0 || beat.heartbeat_interval_seconds > 3600 {
            return Err(ApiError::bad_request(
                "heartbeat_interval_seconds",
                "heartbeat_interval_seconds: must be between 1 and 3600",
            ));
        }
        let pool = pool.to_string();
        let now = now();
        let worker = self
            .write(move |w| {
                w.pool(&pool)?.ok_or_else(|| pool_not_found(&pool))?;
                let old = w.worker(&pool, &beat.name)?;
                if let Some(old) = &old
                    && old.status(now) == WorkerStatus::Online
                    && old.heartbeat_interval_seconds != beat.heartbeat_interval_seconds
                {
                    return Err(interval_of_a_live_worker(old));
                }
                let created = old.as_ref().map_or(now, |old| old.created);
                // Back from a silence: the runs marked DISCONNECTED meanwhile
                // are its again, until it reports what became of them.
                if old.is_some_and(|old| old.status(now) == WorkerStatus::Offline) {
                    for id in w.worker_runs(&pool, &beat.name)? {
                        if let Some(run) = w.run(&id)?
                            && let Some(back) = crate::orchestration::reconnect(&run, now)
                        {
                            w.put_run(Some(&run), &back)?;
                        }
                    }
                }
                let worker = Worker {
                    pool,
                    name: beat.name,
                    heartbeat_interval_seconds: beat.heartbeat_interval_seconds,
                    last_heartbeat: now,
                    created,
                };
                w.put_worker(&worker)?;
                Ok(worker)
            })
            .await?;
        Ok(WorkerView {
            status: worker.status(now),
            worker,
        })
    }

    pub fn workers(&self, pool: &str) -> Result<Vec<WorkerView>, ApiError> {
        let now = now();
        self.read(|r| {
            r.pool(pool)?.ok_or_else(|| pool_not_found(pool))?;
            Ok(r.workers(pool)?
                .into_iter()
                .map(|w| WorkerView {
                    status: w.status(now),
                    worker: w,
                })
                .collect())
        })
    }
}

/// Heartbeats carry no proof of who sends them: one under a live worker's
/// name may keep it alive, but not change how long it is trusted (a ghost
/// setting 3600 s would keep a dead worker's runs from being crashed).
fn interval_of_a_live_worker(old: &Worker) -> ApiError {
    ApiError::conflict_on(
        "heartbeat_interval_seconds",
        format!(
            "heartbeat_interval_seconds: worker {} of pool {} is ONLINE with {} s; its interval changes once it is OFFLINE ({} s without a heartbeat), or start this one under another name",
            old.name,
            old.pool,
            old.heartbeat_interval_seconds,
            old.heartbeat_interval_seconds * crate::model::MISSED_HEARTBEATS_OFFLINE
        ),
    )
}
