//! The home page's dashboard reads: counts of runs by state and hour, taken
//! from the keys of the state index alone (`{state}\0{created}\0{id}`), so
//! that ten thousand runs cost a key scan, not ten thousand records.

use super::find::{FindRuns, RunSort};
use super::records::{RunFilter, time_key};
use super::tables::{self, Raw, prefix_end};
use crate::model::{StateType, Timestamp};
use crate::store::StoreError;

/// Keys read per state at most: far past a day of runs on one server.
const MAX_KEYS: usize = 100_000;

/// Runs created in a window, counted by their state now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunCounts {
    /// Per state, how many runs were created in each bucket, oldest first.
    pub buckets: Vec<(StateType, Vec<u64>)>,
    /// Whether some state had more keys than were read (counts are low).
    pub truncated: bool,
}

impl RunCounts {
    pub fn total(&self, state: StateType) -> u64 {
        self.buckets
            .iter()
            .filter(|(s, _)| *s == state)
            .flat_map(|(_, counts)| counts)
            .sum()
    }
}

pub trait Dashboard: FindRuns + Sized {
    /// Runs created in `[since, since + buckets * width)`, by state, in
    /// `buckets` buckets of `width`.
    fn runs_by_state_and_hour(
        &self,
        since: Timestamp,
        width: chrono::Duration,
        buckets: usize,
    ) -> Result<RunCounts, StoreError> {
        let mut counts = RunCounts::default();
        let width = width.num_microseconds().unwrap_or(1).max(1);
        let start_micros = since.timestamp_micros();
        for state in StateType::ALL {
            let prefix = format!("{state}\0");
            let start = format!("{prefix}{}", time_key(since));
            let keys = self.raw_range(
                tables::IDX_STATE,
                &start,
                &prefix_end(&prefix),
                false,
                MAX_KEYS,
            )?;
            counts.truncated |= keys.len() == MAX_KEYS;
            let mut per_bucket = vec![0; buckets];
            for (key, _) in &keys {
                let Some(created) = key.split('\0').nth(1).and_then(|t| t.parse::<i64>().ok())
                else {
                    continue;
                };
                let bucket = (created - start_micros) / width;
                if let Some(slot) = usize::try_from(bucket)
                    .ok()
                    .and_then(|b| per_bucket.get_mut(b))
                {
                    *slot += 1;
                }
            }
            counts.buckets.push((state, per_bucket));
        }
        Ok(counts)
    }

    /// Ids of the runs now in `state` created since `since`, newest first,
    /// at most `limit`.
    fn run_ids_since(
        &self,
        state: StateType,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{state}\0");
        let start = format!("{prefix}{}", time_key(since));
        Ok(self
            .raw_range(tables::IDX_STATE, &start, &prefix_end(&prefix), true, limit)?
            .into_iter()
            .map(|(_, id)| String::from_utf8_lossy(&id).into_owned())
            .collect())
    }

    /// How many SCHEDULED runs are Late, and the ids of at most `limit` of
    /// them (the latest expected first), counted exactly from the run
    /// summaries (`find`), however many runs there are.
    fn late_runs(&self, limit: usize) -> Result<(usize, Vec<String>), StoreError> {
        let late = RunFilter {
            late: true,
            ..RunFilter::default()
        };
        let page = self.find_runs(&late, RunSort::Expected, None, limit)?;
        let total = usize::try_from(page.total.unwrap_or_default()).unwrap_or(usize::MAX);
        Ok((total, page.runs.into_iter().map(|run| run.id).collect()))
    }
}

impl<T: Raw> Dashboard for T {}
