//! Finding runs for people: the flow-run list's filters (name, states,
//! expected start range, pool, deployment), its two orders and the total
//! that matches, answered from one compact index rather than the runs.
//!
//! [`tables::IDX_EXPECTED`] holds every run under its expected start time,
//! with a small summary of what the list filters on as the entry's value
//! (kept by `Writer::put_run` like every index entry). A listing reads the
//! summaries of the date range once: that gives the total, a substring
//! match on the name (which no key order can serve) and either order,
//! and only the page's runs are then decoded.

use super::records::{RunFilter, RunPage, decode_cursor, encode_cursor, time_key};
use super::tables::{self, Def, Raw, prefix_end};
use super::{StoreError, Writer, storage};
use crate::model::{FlowRun, StateType};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Summaries read from the store at a time while a listing scans them.
const SCAN_CHUNK: usize = 4096;

/// The entry of [`tables::KEYS`] saying every run has its summary (runs an
/// older build wrote get theirs from [`Writer::index_run_summaries`]).
const SUMMARIES_DONE: &str = "run_summaries";

/// The order of a run listing, newest first either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunSort {
    /// By expected start (the scheduled time), as Prefect lists runs: a
    /// run scheduled for later sits above the runs that already ran.
    #[default]
    Expected,
    /// By creation: the order runs were made in.
    Created,
}

impl RunSort {
    pub const ALL: [RunSort; 2] = [RunSort::Expected, RunSort::Created];

    pub fn as_str(self) -> &'static str {
        match self {
            RunSort::Expected => "expected",
            RunSort::Created => "created",
        }
    }

    pub fn parse(text: &str) -> Option<RunSort> {
        RunSort::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

/// What the run list filters on, stored as an index entry's value.
#[derive(Debug, Serialize, Deserialize)]
struct RunSummary {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "t")]
    state: StateType,
    /// SCHEDULED and marked Late.
    #[serde(rename = "l", default)]
    late: bool,
    #[serde(rename = "p")]
    pool: String,
    #[serde(rename = "d")]
    deployment: String,
    /// [`time_key`] of the creation time.
    #[serde(rename = "c")]
    created: String,
}

/// The run's entry in [`tables::IDX_EXPECTED`]: key and value.
pub(super) fn summary_entry(run: &FlowRun) -> Result<(Def, String, Vec<u8>), StoreError> {
    let summary = RunSummary {
        name: run.name.clone(),
        state: run.state.state_type,
        late: is_late(run),
        pool: run.pool.clone(),
        deployment: run.deployment.clone(),
        created: time_key(run.created),
    };
    let value = serde_json::to_vec(&summary).map_err(storage)?;
    let key = format!("{}\0{}", time_key(run.scheduled_at), run.id);
    Ok((tables::IDX_EXPECTED, key, value))
}

pub(super) fn is_late(run: &FlowRun) -> bool {
    run.state.state_type == StateType::Scheduled && run.state.name == crate::orchestration::LATE
}

impl RunFilter {
    /// Whether a run with these properties is listed. The expected start
    /// range is the caller's: it reads only that range of the index.
    pub(super) fn keeps(
        &self,
        pool: &str,
        deployment: &str,
        state: StateType,
        late: bool,
        name: &str,
    ) -> bool {
        let any_state = self.states.is_empty() && !self.late;
        self.pool.as_ref().is_none_or(|p| p == pool)
            && self.deployment.as_ref().is_none_or(|d| d == deployment)
            && (any_state || self.states.contains(&state) || (self.late && late))
            && self
                .name
                .as_ref()
                .is_none_or(|needle| name.to_lowercase().contains(&needle.to_lowercase()))
    }
}

/// The listings a person asks for: the snapshot's and the writer's alike.
pub trait FindRuns: Raw + super::Records {
    /// One page of the runs `filter` keeps in `sort`'s order, after
    /// `cursor` (a `next_cursor` of the same listing), with their total.
    fn find_runs(
        &self,
        filter: &RunFilter,
        sort: RunSort,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RunPage, StoreError> {
        let start = filter.since.map(time_key).unwrap_or_default();
        // `until` is inclusive: every key of that microsecond sorts below.
        let end = match filter.until {
            Some(until) => prefix_end(&time_key(until)),
            None => prefix_end(""),
        };
        let cursor = cursor.map(decode_cursor).transpose()?;
        // Every summary of the range is read (the total counts them all), a
        // chunk at a time; of the matches only the page is kept: the
        // `limit + 1` highest positions below the cursor (the one past the
        // page says whether there is more), so memory stays the page's.
        let mut total: u64 = 0;
        let mut highest: BinaryHeap<Reverse<(String, String)>> = BinaryHeap::new();
        let mut end = end;
        loop {
            let chunk = self.raw_range(tables::IDX_EXPECTED, &start, &end, true, SCAN_CHUNK)?;
            for (key, value) in &chunk {
                let summary: RunSummary = serde_json::from_slice(value)
                    .map_err(|e| StoreError::Corrupt(format!("corrupt run summary: {e}")))?;
                if !filter.keeps(
                    &summary.pool,
                    &summary.deployment,
                    summary.state,
                    summary.late,
                    &summary.name,
                ) {
                    continue;
                }
                total += 1;
                let id = key.rsplit('\0').next().unwrap_or_default();
                let position = match sort {
                    RunSort::Expected => key.clone(),
                    RunSort::Created => format!("{}\0{id}", summary.created),
                };
                if cursor.as_ref().is_some_and(|cursor| position >= *cursor) {
                    continue;
                }
                highest.push(Reverse((position, id.to_string())));
                if highest.len() > limit + 1 {
                    highest.pop();
                }
            }
            match chunk.last() {
                Some((last, _)) if chunk.len() == SCAN_CHUNK => end = last.clone(),
                _ => break,
            }
        }
        let mut page: Vec<(String, String)> = highest.into_iter().map(|Reverse(m)| m).collect();
        page.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        let more = page.len() > limit;
        page.truncate(limit);
        let mut runs = Vec::with_capacity(page.len());
        for (_, id) in &page {
            runs.extend(self.run(id)?);
        }
        Ok(RunPage {
            runs,
            next_cursor: page
                .last()
                .filter(|_| more)
                .map(|(position, _)| encode_cursor(position)),
            total: Some(total),
        })
    }
}

impl<T: Raw> FindRuns for T {}

impl Writer<'_> {
    /// Gives every run an older build wrote its summary entry, once per
    /// database. Returns how many runs it indexed.
    pub fn index_run_summaries(&mut self) -> Result<u64, StoreError> {
        if self.raw_get(tables::KEYS, SUMMARIES_DONE)?.is_some() {
            return Ok(0);
        }
        let mut after = String::new();
        let mut indexed = 0;
        loop {
            let chunk = self.raw_range(tables::RUNS, &after, &prefix_end(""), false, 1000)?;
            let Some((last, _)) = chunk.last() else { break };
            after = format!("{last}\0");
            for (_, value) in &chunk {
                let run: FlowRun = serde_json::from_slice(value)
                    .map_err(|e| StoreError::Corrupt(format!("corrupt record: {e}")))?;
                let (def, key, value) = summary_entry(&run)?;
                self.raw_put(def, &key, &value)?;
                indexed += 1;
            }
        }
        self.raw_put(tables::KEYS, SUMMARIES_DONE, b"1")?;
        Ok(indexed)
    }
}
