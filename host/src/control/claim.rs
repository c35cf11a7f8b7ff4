//! Claiming: the one call a worker makes to get work. In one transaction it
//! takes due runs by queue priority then scheduled time, within the pool,
//! queue, deployment and worker limits, and moves them to PENDING. With a
//! wait it long-polls: it answers as soon as a run is due or a run the worker
//! holds is being cancelled.
//!
//! A claim through a pool hands out that pool's runs, and the cancellations
//! of runs its worker of that name holds, only: a worker is a (pool, name)
//! pair, and what it can touch is its pool's.

use super::{Control, now};
use crate::error::ApiError;
use crate::model::{ClaimedRun, Deployment, Timestamp, WorkPool};
use crate::orchestration;
use crate::store::{Records, Slots, Writer};
use crate::template;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

const MAX_CLAIM: u32 = 1000;
const MAX_WAIT_MS: u64 = 60_000;

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub worker: String,
    /// Only these queues; all of the pool's when absent.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// The worker's free slots; 0 asks only for cancellations.
    #[schema(maximum = 1000)]
    pub limit: u32,
    #[serde(default)]
    #[schema(maximum = 60000)]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimResponse {
    pub runs: Vec<ClaimedRun>,
    /// Runs this worker holds that someone asked to cancel.
    pub cancelling: Vec<String>,
}

impl ClaimResponse {
    fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.cancelling.is_empty()
    }
}

fn slots_left(limit: Option<u32>, active: u64) -> u64 {
    limit.map_or(u64::MAX, |l| u64::from(l).saturating_sub(active))
}

/// The job variables and rendered configuration a worker needs for a run.
pub fn resolve_job(
    pool: &WorkPool,
    deployment: &Deployment,
    run_variables: &serde_json::Map<String, serde_json::Value>,
) -> (
    serde_json::Map<String, serde_json::Value>,
    serde_json::Value,
) {
    let variables = &pool.base_job_template["variables"];
    let defaults = template::defaults(variables);
    let mut deployment_layer = serde_json::Map::new();
    let declares_image = variables
        .get("properties")
        .and_then(|p| p.get("image"))
        .is_some();
    if let (Some(image), true) = (&deployment.image, declares_image) {
        deployment_layer.insert("image".into(), image.clone().into());
    }
    deployment_layer.extend(deployment.job_variables.clone());
    let merged = template::merge_job_variables(&[&defaults, &deployment_layer, run_variables]);
    let configuration = template::render(&pool.base_job_template["job_configuration"], &merged);
    (merged, configuration)
}

fn claim_once(
    w: &mut Writer<'_>,
    pool_name: &str,
    request: &ClaimRequest,
    now: Timestamp,
    lease: Duration,
) -> Result<ClaimResponse, ApiError> {
    let pool = w
        .pool(pool_name)?
        .ok_or_else(|| ApiError::not_found(format!("work pool `{pool_name}` does not exist")))?;
    let mut queues = w.queues(pool_name)?;
    if let Some(wanted) = &request.queues {
        if let Some(unknown) = wanted
            .iter()
            .find(|name| !queues.iter().any(|q| &q.name == *name))
        {
            return Err(ApiError::not_found_on(
                "queues",
                format!("queues: `{unknown}` is not a queue of `{pool_name}`"),
            ));
        }
        queues.retain(|q| wanted.contains(&q.name));
    }
    for queue in &mut queues {
        queue.last_polled = Some(now);
        w.put_queue(queue)?;
    }
    let mut response = ClaimResponse {
        cancelling: w.worker_cancelling(pool_name, &request.worker)?,
        ..Default::default()
    };
    if pool.paused {
        return Ok(response);
    }
    let lease_until =
        now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
    let mut deployments: HashMap<String, Option<Deployment>> = HashMap::new();
    let wanted = request.limit as usize;
    for queue in queues.iter().filter(|q| !q.paused) {
        if response.runs.len() >= wanted {
            break;
        }
        // Extra candidates, since some may be skipped for deployment limits.
        let candidates = w.due_runs(
            pool_name,
            &queue.name,
            now,
            (wanted - response.runs.len()) * 4 + 16,
        )?;
        w.read_ahead_runs(&candidates)?;
        for id in candidates {
            if response.runs.len() >= wanted
                || slots_left(
                    pool.concurrency_limit,
                    w.active_runs(Slots::Pool(pool_name))?,
                ) == 0
                || slots_left(
                    queue.concurrency_limit,
                    w.active_runs(Slots::Queue {
                        pool: pool_name,
                        queue: &queue.name,
                    })?,
                ) == 0
            {
                break;
            }
            let Some(run) = w.run(&id)? else { continue };
            if !deployments.contains_key(&run.deployment) {
                let found = w
                    .deployment(&run.deployment)?
                    .filter(|d| d.id == run.deployment_id);
                deployments.insert(run.deployment.clone(), found);
            }
            let Some(Some(deployment)) = deployments.get(&run.deployment) else {
                continue;
            };
            if deployment.paused
                || slots_left(
                    deployment.concurrency_limit,
                    w.active_runs(Slots::Deployment(&run.deployment))?,
                ) == 0
            {
                continue;
            }
            let Some(claimed) = orchestration::claim(&run, &request.worker, lease_until, now)
            else {
                continue;
            };
            w.put_run(Some(&run), &claimed)?;
            let (job_variables, job_configuration) =
                resolve_job(&pool, deployment, &claimed.job_variables);
            response.runs.push(ClaimedRun {
                flow_run: claimed,
                deployment: deployment.clone(),
                pool_type: pool.pool_type.clone(),
                base_job_template: pool.base_job_template.clone(),
                job_variables,
                job_configuration,
            });
        }
    }
    Ok(response)
}

impl Control {
    pub async fn claim(
        &self,
        pool: &str,
        request: ClaimRequest,
    ) -> Result<ClaimResponse, ApiError> {
        super::names::check_name("worker", &request.worker)?;
        // 0 is the cancellation long-poll of a worker whose slots are all busy.
        if request.limit > MAX_CLAIM {
            return Err(ApiError::bad_request(
                "limit",
                format!("limit: must be between 0 and {MAX_CLAIM}"),
            ));
        }
        if request.wait_ms > MAX_WAIT_MS {
            return Err(ApiError::bad_request(
                "wait_ms",
                format!("wait_ms: at most {MAX_WAIT_MS}"),
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(request.wait_ms);
        let mut changes = self.subscribe();
        let mut waiting = None;
        let mut first = true;
        loop {
            changes.borrow_and_update();
            // After the first pass, only take the writer when something may be claimable.
            if first || self.claimable(pool, &request)? {
                first = false;
                let (pool_name, req, lease) =
                    (pool.to_string(), request.clone(), self.config.lease);
                let response = self
                    .write(move |w| {
                        let now = w.now();
                        claim_once(w, &pool_name, &req, now, lease)
                    })
                    .await?;
                if !response.runs.is_empty() {
                    self.changed();
                }
                if !response.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(response);
                }
            } else if tokio::time::Instant::now() >= deadline {
                return Ok(ClaimResponse::default());
            }
            let wake = match self.next_due(pool, &request)? {
                Some(due) => deadline.min(due),
                None => deadline,
            };
            waiting.get_or_insert_with(|| self.store.waiting());
            let _ = tokio::time::timeout_at(wake, changes.changed()).await;
        }
    }

    /// A read-only look: is there a due run or a cancellation for this worker?
    fn claimable(&self, pool: &str, request: &ClaimRequest) -> Result<bool, ApiError> {
        let now = now();
        self.read(|r| {
            let Some(p) = r.pool(pool)? else {
                return Ok(true);
            };
            if !r.worker_cancelling(pool, &request.worker)?.is_empty() {
                return Ok(true);
            }
            // A due run held back by a full pool or queue is not claimable:
            // without these checks every change would cost a write for nothing.
            if p.paused
                || request.limit == 0
                || slots_left(p.concurrency_limit, r.active_runs(Slots::Pool(pool))?) == 0
            {
                return Ok(false);
            }
            for queue in r.queues(pool)? {
                let wanted = request
                    .queues
                    .as_ref()
                    .is_none_or(|q| q.contains(&queue.name));
                if wanted
                    && !queue.paused
                    && slots_left(
                        queue.concurrency_limit,
                        r.active_runs(Slots::Queue {
                            pool,
                            queue: &queue.name,
                        })?,
                    ) > 0
                    && !r.due_runs(pool, &queue.name, now, 1)?.is_empty()
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// When the earliest run of the polled queues that is not yet due becomes
    /// due. Runs already due but held back by a limit wake us through a change
    /// (a finished run), not through time, so they cannot make this spin.
    fn next_due(
        &self,
        pool: &str,
        request: &ClaimRequest,
    ) -> Result<Option<tokio::time::Instant>, ApiError> {
        let earliest = self.read(|r| {
            let mut earliest: Option<i64> = None;
            for queue in r.queues(pool)? {
                if request
                    .queues
                    .as_ref()
                    .is_none_or(|q| q.contains(&queue.name))
                    && let Some(due) = r.next_due_after(pool, &queue.name, now())?
                {
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                }
            }
            Ok(earliest)
        })?;
        Ok(earliest.map(|micros| {
            let wait = micros.saturating_sub(now().timestamp_micros()).max(0);
            tokio::time::Instant::now() + Duration::from_micros(wait as u64)
        }))
    }
}

impl Control {
    /// The active runs a worker holds, resolved as a claim would give them:
    /// what a restarted worker needs to recover them.
    pub fn held_runs(&self, pool: &str, worker: &str) -> Result<Vec<ClaimedRun>, ApiError> {
        self.read(|r| {
            let pool = r
                .pool(pool)?
                .ok_or_else(|| ApiError::not_found(format!("work pool `{pool}` does not exist")))?;
            let mut held = Vec::new();
            for id in r.worker_runs(&pool.name, worker)? {
                let Some(run) = r.run(&id)? else { continue };
                let Some(deployment) = r
                    .deployment(&run.deployment)?
                    .filter(|d| d.id == run.deployment_id)
                else {
                    continue;
                };
                let (job_variables, job_configuration) =
                    resolve_job(&pool, &deployment, &run.job_variables);
                held.push(ClaimedRun {
                    flow_run: run,
                    deployment,
                    pool_type: pool.pool_type.clone(),
                    base_job_template: pool.base_job_template.clone(),
                    job_variables,
                    job_configuration,
                });
            }
            Ok(held)
        })
    }
}
