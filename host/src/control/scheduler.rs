//! Background upkeep of the control plane, once a second:
//! - keeps future runs of scheduled deployments created (at least
//!   `MIN_RUNS` runs and `MIN_AHEAD` ahead, at most `MAX_AHEAD`), and never
//!   more than `MAX_RUNS` waiting per deployment, Late ones included: a
//!   schedule that outruns its workers stops at that count instead of piling
//!   up runs;
//! - renames SCHEDULED runs Late when they wait `late_after` past their time;
//! - marks the runs of OFFLINE workers DISCONNECTED, and CRASHED once they
//!   stay so for `worker_lost_after` (see `sweep_worker`).
//!
//! It writes only when there is something to do, so an idle server is idle.
//!
//! A silence is counted only while this server sweeps without a gap
//! ([`SweepClock`]): a server that was paused, cut off, without its
//! database or not leading could not hear heartbeats, so that time never
//! counts against a worker.

use super::deployments::new_run;
use super::{Control, now};
use crate::error::ApiError;
use crate::model::{Deployment, FlowRun, Schedule, Timestamp, Worker};
use crate::orchestration;
use crate::store::Records;
use chrono::TimeZone;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::time::Duration;

const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 100;
const MIN_AHEAD: chrono::Duration = chrono::Duration::hours(1);
const MAX_AHEAD: chrono::Duration = chrono::Duration::days(100);
const TICK: Duration = Duration::from_secs(1);
/// The longest interval a schedule may have: ten years. Far past any real
/// schedule, and far inside what time arithmetic can hold.
pub const MAX_INTERVAL_SECONDS: u64 = 10 * 366 * 24 * 3600;
/// Runs changed per upkeep transaction at most; the rest wait for the next tick.
const MAX_CHANGES_PER_TICK: usize = 2_000;

/// Checks a schedule as a deployment is created, naming the field.
pub fn check_schedule(field: &str, schedule: &Schedule) -> Result<(), ApiError> {
    match (&schedule.interval_seconds, &schedule.cron) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::bad_request(
                field,
                format!("{field}: give exactly one of interval_seconds and cron"),
            ));
        }
        (Some(seconds), None) if !(1..=MAX_INTERVAL_SECONDS).contains(seconds) => {
            return Err(ApiError::bad_request(
                format!("{field}.interval_seconds"),
                format!(
                    "{field}.interval_seconds: must be between 1 and {MAX_INTERVAL_SECONDS} (10 years)"
                ),
            ));
        }
        (None, Some(cron)) => {
            croner::Cron::from_str(cron).map_err(|e| {
                ApiError::bad_request(
                    format!("{field}.cron"),
                    format!("{field}.cron: {cron:?} is not a cron expression: {e}"),
                )
            })?;
        }
        (Some(_), None) => {}
    }
    schedule.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
        ApiError::bad_request(
            format!("{field}.timezone"),
            format!(
                "{field}.timezone: unknown time zone {:?}",
                schedule.timezone
            ),
        )
    })?;
    Ok(())
}

/// The plain five-field cron the API document states (numbers, `*`, `*/n`,
/// lists): a subset of what `croner` reads, so every value the pattern admits
/// passes [`check_schedule`].
pub fn cron_subset_pattern() -> String {
    // `*` stands alone; croner refuses it inside a list (`1,*`).
    let field = |number: &str, max_step: char| {
        let item = format!(r"\*/[1-{max_step}]|{number}");
        format!(r"(\*|({item})(,({item}))*)")
    };
    let fields = [
        field("[1-5]?[0-9]", '9'),           // minute
        field("1?[0-9]|2[0-3]", '9'),        // hour
        field("[1-9]|[12][0-9]|3[01]", '9'), // day of month
        field("[1-9]|1[0-2]", '9'),          // month
        field("[0-6]", '6'),                 // day of week
    ];
    format!("^{}$", fields.join(" "))
}

/// The first occurrence strictly after `after`.
pub fn next_occurrence(schedule: &Schedule, after: Timestamp) -> Option<Timestamp> {
    if let Some(interval) = schedule.interval_seconds {
        let interval = i64::try_from(interval).ok()?.max(1);
        let anchor = schedule
            .anchor
            .unwrap_or_else(|| chrono::Utc.timestamp_opt(0, 0).single().unwrap_or(after));
        let elapsed = (after - anchor).num_seconds();
        let steps = elapsed.div_euclid(interval) + 1;
        // Checked: a stored value past the bound (from before it) must not
        // panic the scheduler; it just has no next occurrence.
        let offset = chrono::Duration::try_seconds(steps.checked_mul(interval)?)?;
        return anchor.checked_add_signed(offset);
    }
    let cron = croner::Cron::from_str(schedule.cron.as_deref()?).ok()?;
    let tz: chrono_tz::Tz = schedule.timezone.parse().ok()?;
    let next = cron
        .find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()?;
    Some(next.with_timezone(&chrono::Utc))
}

/// The times the scheduler wants runs at, from `now`, in order.
pub fn wanted_times(schedules: &[Schedule], now: Timestamp) -> Vec<Timestamp> {
    let mut cursors: Vec<(Timestamp, &Schedule)> = schedules
        .iter()
        .filter(|s| s.active)
        .filter_map(|s| Some((next_occurrence(s, now)?, s)))
        .collect();
    let mut times = Vec::new();
    while times.len() < MAX_RUNS {
        let Some((index, &(time, schedule))) =
            cursors.iter().enumerate().min_by_key(|(_, (t, _))| *t)
        else {
            break;
        };
        if time > now + MAX_AHEAD || (times.len() >= MIN_RUNS && time > now + MIN_AHEAD) {
            break;
        }
        if times.last() != Some(&time) {
            times.push(time);
        }
        match next_occurrence(schedule, time) {
            Some(next) => cursors[index].0 = next,
            None => {
                cursors.remove(index);
            }
        }
    }
    times
}

/// One id per deployment and time, so a run is never scheduled twice even if
/// it was claimed or cancelled before the next tick.
fn scheduled_run_id(deployment_id: &str, at: Timestamp) -> String {
    let digest = Sha256::digest(format!("{deployment_id}@{}", at.timestamp_micros()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Longest pause between two sweeps that still counts as watching: the
/// upkeep ticks every second.
const MAX_SWEEP_GAP: chrono::Duration = chrono::Duration::seconds(5);

/// Since when this server has been sweeping without a gap. A server that
/// was paused (SIGSTOP, a VM pause, a long GC), cut off, without its
/// database or not leading could not hear heartbeats; its clock says
/// nothing about the workers, so their silence counts only from here.
#[derive(Default)]
pub struct SweepClock {
    inner: std::sync::Mutex<(Option<Timestamp>, Option<Timestamp>)>,
}

impl SweepClock {
    fn watching_since(&self, now: Timestamp) -> Timestamp {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (last, since) = &mut *inner;
        match last {
            Some(last) if now - *last <= MAX_SWEEP_GAP => {}
            _ => *since = Some(now),
        }
        since.unwrap_or(now)
    }

    fn swept(&self, now: Timestamp) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(now);
    }
}

/// What one tick should write.
#[derive(Default)]
struct Upkeep {
    new_runs: Vec<FlowRun>,
    updated_runs: Vec<(FlowRun, FlowRun)>,
}

impl Control {
    /// Runs the upkeep loop until the returned task is dropped or aborted;
    /// a panic in it is reported by health and the loop started again.
    pub fn spawn_scheduler(&self) -> super::supervise::Supervised {
        let control = self.clone();
        super::supervise::supervise(self.tasks.clone(), "scheduler", move || {
            control.clone().upkeep_loop()
        })
    }

    async fn upkeep_loop(self) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // On a shared database one server does the upkeep; deterministic
            // run ids would keep the others' from duplicating it anyway.
            if !self.store.lead().await {
                continue;
            }
            match self.upkeep().await {
                Ok(_) => self.tasks.healthy("scheduler"),
                Err(error) => {
                    tracing::warn!(%error, "scheduler upkeep failed; retrying next tick")
                }
            }
        }
    }

    /// One pass of upkeep. Public so tests can drive it without waiting.
    pub async fn upkeep(&self) -> Result<usize, ApiError> {
        let now = now();
        let watching_since = self.sweep_clock.watching_since(now);
        let plan = self.read(|r| {
            let mut plan = Upkeep::default();
            for deployment in r.deployments()? {
                if deployment.paused || !deployment.schedules.iter().any(|s| s.active) {
                    continue;
                }
                plan.new_runs
                    .extend(self.missing_runs(r, &deployment, now)?);
            }
            let late_after = chrono::Duration::from_std(self.config.late_after)
                .unwrap_or(chrono::Duration::seconds(15));
            for id in r.late_candidates(now - late_after, MAX_CHANGES_PER_TICK)? {
                if let Some(run) = r.run(&id)?
                    && let Some(late) = orchestration::mark_late(&run, now, late_after)
                {
                    plan.updated_runs.push((run, late));
                }
            }
            let lost_after = chrono::Duration::from_std(self.config.worker_lost_after)
                .unwrap_or(chrono::Duration::seconds(300));
            for worker in r.all_workers()? {
                self.sweep_worker(r, &worker, watching_since, lost_after, now, &mut plan)?;
            }
            Ok(plan)
        })?;
        // Only a sweep that could read counts as watching: while the
        // database was away, heartbeats could not be recorded either.
        self.sweep_clock.swept(now);
        let changes = plan.new_runs.len() + plan.updated_runs.len();
        if changes == 0 {
            return Ok(0);
        }
        self.write(move |w| {
            for run in plan.new_runs.into_iter().take(MAX_CHANGES_PER_TICK) {
                if w.run(&run.id)?.is_none() {
                    w.put_run(None, &run)?;
                }
            }
            for (old, new) in plan.updated_runs {
                // Only if nobody changed it since the read.
                if w.run(&old.id)?.as_ref() == Some(&old) {
                    w.put_run(Some(&old), &new)?;
                }
            }
            Ok(())
        })
        .await?;
        self.changed();
        Ok(changes)
    }

    /// A silent worker's runs: DISCONNECTED once it is OFFLINE, CRASHED
    /// once they stayed disconnected for `lost_after`. Silence is counted
    /// from `watching_since` at the earliest: time this server was not
    /// sweeping (paused, partitioned, not leading, without its database)
    /// never counts against a worker.
    fn sweep_worker(
        &self,
        r: &crate::store::Snapshot,
        worker: &Worker,
        watching_since: Timestamp,
        lost_after: chrono::Duration,
        now: Timestamp,
        plan: &mut Upkeep,
    ) -> Result<(), ApiError> {
        let heard = worker.last_heartbeat.max(watching_since);
        let allowed = chrono::Duration::seconds(i64::from(
            worker.heartbeat_interval_seconds * crate::model::MISSED_HEARTBEATS_OFFLINE,
        ));
        if now - heard <= allowed {
            return Ok(());
        }
        let silent = format!(
            "worker `{}` stopped heartbeating at {}",
            worker.name,
            worker.last_heartbeat.to_rfc3339()
        );
        for id in r.worker_runs(&worker.pool, &worker.name)? {
            let Some(run) = r.run(&id)? else { continue };
            let next = if run.state.name != orchestration::DISCONNECTED {
                let reason = format!(
                    "{silent}; the run's outcome is unknown until it reports again (CRASHED after {}s more)",
                    lost_after.num_seconds()
                );
                orchestration::disconnect(&run, &reason, now)
            } else if now - run.state.timestamp.max(watching_since) >= lost_after {
                let reason = format!(
                    "{silent} and did not come back within {}s",
                    lost_after.num_seconds()
                );
                orchestration::crash_abandoned(&run, &reason, now)
            } else {
                None
            };
            if let Some(next) = next {
                plan.updated_runs.push((run, next));
            }
        }
        Ok(())
    }

    fn missing_runs(
        &self,
        r: &crate::store::Snapshot,
        deployment: &Deployment,
        now: Timestamp,
    ) -> Result<Vec<FlowRun>, ApiError> {
        let mut runs = Vec::new();
        let waiting = r.auto_scheduled(&deployment.id)?.len();
        let room = MAX_RUNS.saturating_sub(waiting);
        for at in wanted_times(&deployment.schedules, now) {
            if runs.len() >= room {
                break;
            }
            let id = scheduled_run_id(&deployment.id, at);
            if r.run(&id)?.is_none() {
                let mut run = new_run(
                    deployment,
                    id,
                    Default::default(),
                    Default::default(),
                    at,
                    now,
                );
                run.auto_scheduled = true;
                runs.push(run);
            }
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(seconds: u64) -> Schedule {
        Schedule {
            interval_seconds: Some(seconds),
            cron: None,
            timezone: "UTC".into(),
            anchor: None,
            active: true,
        }
    }

    #[test]
    fn keeps_at_least_three_runs_and_an_hour_ahead() {
        let now = chrono::Utc::now();
        let hourly = wanted_times(&[every(3600)], now);
        assert_eq!(hourly.len(), MIN_RUNS);
        let minutely = wanted_times(&[every(60)], now);
        assert_eq!(minutely.len(), 60, "an hour of minutely runs");
        let secondly = wanted_times(&[every(1)], now);
        assert_eq!(secondly.len(), MAX_RUNS, "bounded");
        assert!(minutely.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn every_cron_the_document_admits_is_accepted() {
        let pattern = serde_json::json!({"pattern": cron_subset_pattern()});
        let matches = |cron: &str| jsonschema::is_valid(&pattern, &serde_json::json!(cron));
        let fields: [&[&str]; 5] = [
            &["*", "*/9", "0", "59", "0,*/1,59"],
            &["*", "*/9", "0", "23", "9,19,23"],
            &["*", "*/9", "1", "31", "29,30,31"],
            &["*", "*/9", "1", "12", "2,*/9,12"],
            &["*", "*/6", "0", "6", "*/1,0,6"],
        ];
        for (i, values) in fields.iter().enumerate() {
            for value in *values {
                let mut parts = ["*"; 5];
                parts[i] = value;
                let cron = parts.join(" ");
                assert!(matches(&cron), "{cron} should match the pattern");
                let schedule = Schedule {
                    interval_seconds: None,
                    cron: Some(cron.clone()),
                    timezone: "UTC".into(),
                    anchor: None,
                    active: true,
                };
                assert!(check_schedule("s", &schedule).is_ok(), "{cron} refused");
            }
        }
        for outside in [
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * */7",
            "@daily",
        ] {
            assert!(!matches(outside), "{outside} should not match");
        }
    }

    #[test]
    fn an_interval_past_time_arithmetic_has_no_next_run_and_is_refused() {
        let now = chrono::Utc::now();
        let huge = every(i64::MAX as u64);
        assert_eq!(next_occurrence(&huge, now), None);
        assert_eq!(
            check_schedule("s", &huge)
                .expect_err("refused")
                .field
                .as_deref(),
            Some("s.interval_seconds")
        );
        assert!(check_schedule("s", &every(MAX_INTERVAL_SECONDS)).is_ok());
        assert!(next_occurrence(&every(MAX_INTERVAL_SECONDS), now).is_some());
    }

    #[test]
    fn cron_is_evaluated_in_its_time_zone() {
        let schedule = Schedule {
            interval_seconds: None,
            cron: Some("0 9 * * *".into()),
            timezone: "America/New_York".into(),
            anchor: None,
            active: true,
        };
        let after = chrono::Utc
            .with_ymd_and_hms(2026, 1, 15, 0, 0, 0)
            .single()
            .expect("date");
        let next = next_occurrence(&schedule, after).expect("next");
        // 09:00 in New York in January is 14:00 UTC.
        assert_eq!(
            next,
            chrono::Utc
                .with_ymd_and_hms(2026, 1, 15, 14, 0, 0)
                .single()
                .expect("date")
        );
    }

    #[test]
    fn bad_schedules_name_their_field() {
        let mut bad = every(0);
        assert_eq!(
            check_schedule("schedules[0]", &bad)
                .expect_err("refused")
                .field
                .as_deref(),
            Some("schedules[0].interval_seconds")
        );
        bad = Schedule {
            interval_seconds: None,
            cron: Some("not cron".into()),
            ..every(1)
        };
        assert_eq!(
            check_schedule("schedules[0]", &bad)
                .expect_err("refused")
                .field
                .as_deref(),
            Some("schedules[0].cron")
        );
        bad = Schedule {
            timezone: "Mars/Olympus".into(),
            ..every(5)
        };
        assert_eq!(
            check_schedule("schedules[0]", &bad)
                .expect_err("refused")
                .field
                .as_deref(),
            Some("schedules[0].timezone")
        );
    }
}
