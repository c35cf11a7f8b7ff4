//! Deployments (created or updated by name) and the runs made from them.

use super::names::{check_user_name, run_name};
use super::scheduler::check_schedule;
use super::schema::validate_job_variables;
use super::{Control, Scope, now};
use crate::error::ApiError;
use crate::model::{Deployment, FlowRun, Schedule, State, StateType, Timestamp, WorkQueue};
use crate::store::{Records, Writer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub flow: String,
    pub name: String,
    pub pool: String,
    #[serde(default)]
    pub queue: Option<String>,
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
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpsertOutcome {
    pub deployment: Deployment,
    /// True when it did not exist before.
    pub created: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub job_variables: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<Timestamp>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A change to one schedule of a deployment (Prefect's schedule toggle and
/// edit): what is given changes, the rest stays. A cron replaces an
/// interval and an interval a cron.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleUpdate {
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub interval_seconds: Option<u64>,
    #[serde(default)]
    pub timezone: Option<String>,
}

impl ScheduleUpdate {
    /// `schedule` with the change applied, checked; an error names the
    /// field of the update (`cron`), as the form that sent it calls it.
    fn apply(&self, schedule: &Schedule, index: usize) -> Result<Schedule, ApiError> {
        if self.cron.is_some() && self.interval_seconds.is_some() {
            return Err(ApiError::bad_request(
                "cron",
                "cron: give either cron or interval_seconds, not both",
            ));
        }
        let mut next = schedule.clone();
        if let Some(cron) = &self.cron {
            next.cron = Some(cron.trim().to_string());
            next.interval_seconds = None;
        }
        if let Some(seconds) = self.interval_seconds {
            next.interval_seconds = Some(seconds);
            next.cron = None;
        }
        if let Some(timezone) = &self.timezone {
            next.timezone = timezone.clone();
        }
        if let Some(active) = self.active {
            next.active = active;
        }
        let prefix = format!("schedules[{index}]");
        check_schedule(&prefix, &next).map_err(|mut e| {
            e.field = e.field.map(|f| {
                f.strip_prefix(&format!("{prefix}."))
                    .map_or_else(|| "cron".to_string(), str::to_string)
            });
            e.message = e.message.replacen(&format!("{prefix}."), "", 1);
            e
        })?;
        Ok(next)
    }
}

/// The most a run's parameters may take as JSON. They reach the flow in
/// the `HOST_PARAMETERS` environment variable, and Linux refuses to start a
/// process with one environment string over 128 KiB ("Argument list too
/// long"): refused here, at once, rather than CRASHED on the worker.
pub const MAX_PARAMETERS_BYTES: usize = 64 << 10;

fn check_parameters(field: &str, parameters: &Map<String, Value>) -> Result<(), ApiError> {
    let size = serde_json::to_vec(parameters).map_or(0, |json| json.len());
    if size > MAX_PARAMETERS_BYTES {
        return Err(ApiError::bad_request(
            field,
            format!(
                "{field}: {size} bytes as JSON, more than the {MAX_PARAMETERS_BYTES} a flow can be handed (they travel in its environment); pass a reference (a path, a URL) instead"
            ),
        ));
    }
    Ok(())
}

fn deployment_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("deployment `{name}` does not exist"))
}

/// A new SCHEDULED run of `deployment`.
pub(super) fn new_run(
    deployment: &Deployment,
    id: String,
    parameters: Map<String, Value>,
    job_variables: Map<String, Value>,
    scheduled_at: Timestamp,
    now: Timestamp,
) -> FlowRun {
    let mut merged = deployment.parameters.clone();
    merged.extend(parameters);
    FlowRun {
        name: run_name(&id),
        id,
        deployment_id: deployment.id.clone(),
        deployment: deployment.full_name(),
        pool: deployment.pool.clone(),
        queue: deployment.queue.clone(),
        parameters: merged,
        job_variables,
        scheduled_at,
        state: State::new(StateType::Scheduled, now),
        history: Vec::new(),
        worker: None,
        lease_until: None,
        infrastructure_handle: None,
        exit_code: None,
        auto_scheduled: false,
        transition_keys: Vec::new(),
        created: now,
        updated: now,
    }
}

/// Drops the scheduler's future runs so it makes them again from the new schedules.
fn clear_auto_scheduled(w: &mut Writer<'_>, deployment_id: &str) -> Result<(), ApiError> {
    for (_, id) in w.auto_scheduled(deployment_id)? {
        if let Some(run) = w.run(&id)? {
            w.delete_run(&run)?;
        }
    }
    Ok(())
}

impl Control {
    /// Creates or replaces `spec`'s deployment. Within `scope` only: the
    /// deployment it replaces must be in a pool the scope covers, and only
    /// an admin's scope makes a queue the pool lacks (a deployer naming an
    /// unknown queue is told so, 404 `queue`).
    pub async fn upsert_deployment(
        &self,
        spec: DeploymentSpec,
        scope: &Scope,
    ) -> Result<UpsertOutcome, ApiError> {
        check_user_name("flow", &spec.flow)?;
        check_user_name("name", &spec.name)?;
        let queue = spec.queue.clone().unwrap_or_else(|| "default".into());
        check_user_name("queue", &queue)?;
        for (i, schedule) in spec.schedules.iter().enumerate() {
            check_schedule(&format!("schedules[{i}]"), schedule)?;
        }
        // `-- ""` is a mistake; an empty argument among others may be meant.
        if spec.command == [String::new()] {
            return Err(ApiError::bad_request(
                "command",
                "command: must not be empty",
            ));
        }
        let pool = self.read(|r| Ok(r.pool(&spec.pool)?))?.ok_or_else(|| {
            ApiError::not_found_on(
                "pool",
                format!("pool: work pool `{}` does not exist", spec.pool),
            )
        })?;
        validate_job_variables(
            "job_variables",
            &spec.job_variables,
            &pool.base_job_template["variables"],
            &pool.name,
        )?;
        check_parameters("parameters", &spec.parameters)?;
        let now = now();
        let scope = scope.clone();
        let outcome = self
            .write(move |w| {
                let full_name = format!("{}/{}", spec.flow, spec.name);
                scope.check_pool(&format!("deployment `{full_name}`"), &spec.pool)?;
                let existing = w.deployment(&full_name)?;
                if let Some(existing) = &existing {
                    scope.check_pool(&format!("deployment `{full_name}`"), &existing.pool)?;
                }
                if w.queue(&spec.pool, &queue)?.is_none() {
                    if scope.pools.is_some() {
                        return Err(ApiError::not_found_on(
                            "queue",
                            format!(
                                "queue: work pool `{}` has no queue `{queue}`; an admin makes queues",
                                spec.pool
                            ),
                        ));
                    }
                    let lowest = w
                        .queues(&spec.pool)?
                        .iter()
                        .map(|q| q.priority)
                        .max()
                        .unwrap_or(0);
                    w.put_queue(&WorkQueue {
                        pool: spec.pool.clone(),
                        name: queue.clone(),
                        description: String::new(),
                        priority: lowest + 1,
                        concurrency_limit: None,
                        paused: false,
                        last_polled: None,
                        created: now,
                    })?;
                }
                let deployment = Deployment {
                    id: existing
                        .as_ref()
                        .map_or_else(|| uuid::Uuid::new_v4().to_string(), |d| d.id.clone()),
                    flow: spec.flow,
                    name: spec.name,
                    pool: spec.pool,
                    queue,
                    command: spec.command,
                    image: spec.image,
                    parameters: spec.parameters,
                    job_variables: spec.job_variables,
                    schedules: spec.schedules,
                    concurrency_limit: spec.concurrency_limit,
                    paused: spec.paused,
                    created: existing.as_ref().map_or(now, |d| d.created),
                    updated: now,
                };
                let reschedule = existing.as_ref().is_some_and(|old| {
                    old.schedules != deployment.schedules
                        || old.paused != deployment.paused
                        || old.queue != deployment.queue
                        || old.pool != deployment.pool
                });
                if reschedule {
                    clear_auto_scheduled(w, &deployment.id)?;
                }
                w.put_deployment(&deployment)?;
                Ok(UpsertOutcome {
                    deployment,
                    created: existing.is_none(),
                })
            })
            .await?;
        self.changed();
        Ok(outcome)
    }

    pub fn deployments(&self) -> Result<Vec<Deployment>, ApiError> {
        self.read(|r| Ok(r.deployments()?))
    }

    pub fn deployment(&self, full_name: &str) -> Result<Deployment, ApiError> {
        self.read(|r| Ok(r.deployment(full_name)?))?
            .ok_or_else(|| deployment_not_found(full_name))
    }

    /// Deletes the deployment and every SCHEDULED run of it (the
    /// scheduler's and people's: with the deployment gone no claim would
    /// hand them out, they would only turn Late). Runs that started, active
    /// or final, keep their record and logs: an active one's worker already
    /// has what it needs and reports its end. Returns how many runs went.
    pub async fn delete_deployment(&self, full_name: &str) -> Result<usize, ApiError> {
        let name = full_name.to_string();
        let dropped = self
            .write(move |w| {
                let full_name = name;
                w.deployment(&full_name)?
                    .ok_or_else(|| deployment_not_found(&full_name))?;
                let mut dropped = 0;
                loop {
                    let runs = w.deployment_runs_in(&full_name, StateType::Scheduled, 1000)?;
                    for run in &runs {
                        w.delete_run(run)?;
                    }
                    dropped += runs.len();
                    if runs.len() < 1000 {
                        break;
                    }
                }
                w.delete_deployment(&full_name)?;
                Ok(dropped)
            })
            .await?;
        tracing::info!(deployment = %full_name, scheduled_runs_deleted = dropped, "deployment deleted");
        self.changed();
        Ok(dropped)
    }

    /// Pauses or resumes a deployment (Prefect's pause/resume). Paused, its
    /// schedules make no runs (the scheduler's future runs are dropped now
    /// and made again on resume, as when its schedules change) and no claim
    /// hands out its SCHEDULED runs; runs made by hand stay SCHEDULED and
    /// go out once it is resumed. Runs already claimed are not touched.
    /// Pausing a paused deployment changes nothing.
    pub async fn set_deployment_paused(
        &self,
        full_name: &str,
        paused: bool,
    ) -> Result<Deployment, ApiError> {
        let full_name = full_name.to_string();
        let now = now();
        let deployment = self
            .write(move |w| {
                let mut deployment = w
                    .deployment(&full_name)?
                    .ok_or_else(|| deployment_not_found(&full_name))?;
                if deployment.paused == paused {
                    return Ok(deployment);
                }
                deployment.paused = paused;
                deployment.updated = now;
                if paused {
                    clear_auto_scheduled(w, &deployment.id)?;
                }
                w.put_deployment(&deployment)?;
                Ok(deployment)
            })
            .await?;
        tracing::info!(deployment = %deployment.full_name(), paused, "deployment paused state set");
        // Resuming may make runs claimable at once.
        self.changed();
        Ok(deployment)
    }

    /// Turns one schedule on or off, or changes its cron, interval or time
    /// zone. Any change drops the scheduler's future runs of the deployment,
    /// which makes them again from the schedules as they are now (none for
    /// an inactive schedule), as pausing the deployment does.
    pub async fn update_schedule(
        &self,
        full_name: &str,
        index: usize,
        update: ScheduleUpdate,
    ) -> Result<Deployment, ApiError> {
        let full_name = full_name.to_string();
        let now = now();
        let deployment = self
            .write(move |w| {
                let mut deployment = w
                    .deployment(&full_name)?
                    .ok_or_else(|| deployment_not_found(&full_name))?;
                let count = deployment.schedules.len();
                let schedule = deployment.schedules.get_mut(index).ok_or_else(|| {
                    ApiError::not_found_on(
                        "index",
                        format!("index: deployment `{full_name}` has {count} schedule(s), no schedule {index}"),
                    )
                })?;
                let next = update.apply(schedule, index)?;
                if *schedule == next {
                    return Ok(deployment);
                }
                *schedule = next;
                deployment.updated = now;
                clear_auto_scheduled(w, &deployment.id)?;
                w.put_deployment(&deployment)?;
                Ok(deployment)
            })
            .await?;
        tracing::info!(deployment = %deployment.full_name(), index, "deployment schedule updated");
        self.changed();
        Ok(deployment)
    }

    /// `host deployment run`: a new SCHEDULED run, due now unless told otherwise.
    pub async fn create_run(
        &self,
        full_name: &str,
        request: RunRequest,
    ) -> Result<FlowRun, ApiError> {
        let deployment = self.deployment(full_name)?;
        let pool = self
            .read(|r| Ok(r.pool(&deployment.pool)?))?
            .ok_or_else(|| {
                ApiError::conflict(format!("work pool `{}` no longer exists", deployment.pool))
            })?;
        validate_job_variables(
            "job_variables",
            &request.job_variables,
            &pool.base_job_template["variables"],
            &pool.name,
        )?;
        let now = now();
        let id = uuid::Uuid::new_v4().to_string();
        let mut run = new_run(
            &deployment,
            id,
            request.parameters,
            request.job_variables,
            request.scheduled_at.unwrap_or(now),
            now,
        );
        // Merged with the deployment's: the sum is what the flow gets.
        check_parameters("parameters", &run.parameters)?;
        if let Some(name) = request.name {
            super::names::check_name("name", &name)?;
            run.name = name;
        }
        let stored = run.clone();
        let deployment_id = deployment.id.clone();
        self.write(move |w| {
            // The deployment may have been deleted since it was read.
            match w.deployment(&stored.deployment)? {
                Some(d) if d.id == deployment_id => Ok(w.put_run(None, &stored)?),
                _ => Err(deployment_not_found(&stored.deployment)),
            }
        })
        .await?;
        self.changed();
        Ok(run)
    }
}
