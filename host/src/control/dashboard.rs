//! What the home page's dashboard shows, in one read: runs of the last day
//! by state and hour, the Late runs and the deployments with Late or
//! failing runs. Counts come from index keys (`store::Dashboard`); only the
//! Late and failed runs themselves are loaded, for their deployment's name.

use super::{Control, now};
use crate::error::ApiError;
use crate::model::{StateType, Timestamp};
use crate::store::{Dashboard, Records, RunCounts};
use chrono::DurationRound;
use std::collections::BTreeMap;

/// The window the dashboard covers, in hourly buckets.
pub const HOURS: usize = 24;
/// Late or failed runs loaded at most for the per-deployment lists (the
/// Late count itself is exact, from index keys).
const MAX_LOADED: usize = 200;

#[derive(Debug, Clone)]
pub struct DashboardView {
    /// The start of the first hourly bucket.
    pub since: Timestamp,
    pub counts: RunCounts,
    /// SCHEDULED runs past their time (Late), all of them.
    pub late: usize,
    /// Per deployment: its Late runs, and its FAILED/CRASHED runs of the
    /// last day; only deployments with one or the other. Counted over at
    /// most `MAX_LOADED` runs of each kind.
    pub troubled: BTreeMap<String, Trouble>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trouble {
    pub late: usize,
    pub failed: usize,
}

impl Control {
    pub fn dashboard(&self) -> Result<DashboardView, ApiError> {
        let now = now();
        // Whole hours, so a bar is the same hour from one render to the next.
        let hour = chrono::Duration::hours(1);
        let this_hour = now.duration_trunc(hour).unwrap_or(now);
        let since = this_hour - hour * (HOURS as i32 - 1);
        self.read(|r| {
            let counts = r.runs_by_state_and_hour(since, hour, HOURS)?;
            let (late, some_late) = r.late_runs(MAX_LOADED)?;
            let mut troubled: BTreeMap<String, Trouble> = BTreeMap::new();
            for id in some_late {
                if let Some(run) = r.run(&id)? {
                    troubled.entry(run.deployment).or_default().late += 1;
                }
            }
            for state in [StateType::Failed, StateType::Crashed] {
                for id in r.run_ids_since(state, since, MAX_LOADED)? {
                    if let Some(run) = r.run(&id)? {
                        troubled.entry(run.deployment).or_default().failed += 1;
                    }
                }
            }
            Ok(DashboardView {
                since,
                counts,
                late,
                troubled,
            })
        })
    }
}
