//! Typed records over the raw tables, and the index upkeep of flow runs.
//!
//! `Writer::put_run` derives a run's index entries and its active-run
//! counters from the old and the new record, in the same transaction as the
//! record: nobody updates an index by hand, so an index or a concurrency
//! count can never disagree with the runs it stands for.

use super::tables::{self, Def, Raw, prefix_end};
use super::{Writer, storage};
use crate::events::Change;
use crate::model::{
    ApiToken, Deployment, FlowRun, LogLine, StateType, Timestamp, WorkPool, WorkQueue, Worker,
};
use crate::store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Index entries are bounded per scan so one request cannot read the world.
const MAX_SCAN: usize = 100_000;

/// The entry of [`tables::KEYS`] holding the tokens' HMAC key.
const TOKEN_KEY: &str = "tokens";

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(storage)
}

/// Sortable text form of a time: zero-padded microseconds since the epoch.
pub fn time_key(t: Timestamp) -> String {
    format!("{:020}", t.timestamp_micros().max(0))
}

/// Key of a record that belongs to a pool: a queue or a worker.
fn pool_member_key(pool: &str, name: &str) -> String {
    format!("{pool}\0{name}")
}

/// Which flow runs to list; unset fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pool: Option<String>,
    pub deployment: Option<String>,
    /// Runs in any of these states.
    pub states: Vec<StateType>,
    /// Also SCHEDULED runs the server marked Late (past their time); alone,
    /// only those.
    pub late: bool,
    /// Runs whose name holds this, ignoring case.
    pub name: Option<String>,
    /// Runs expected to start at or after this (their scheduled time).
    pub since: Option<Timestamp>,
    /// Runs expected to start at or before this.
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunPage {
    pub runs: Vec<FlowRun>,
    /// Pass back to get the next (older) page; none when this was the last.
    pub next_cursor: Option<String>,
    /// How many runs match the filter in all (the API's listing says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Reads, for snapshots and writers alike.
pub trait Records: Raw {
    fn get_json<T: DeserializeOwned>(&self, def: Def, key: &str) -> Result<Option<T>, StoreError> {
        self.raw_get(def, key)?.map(|b| decode(&b)).transpose()
    }

    fn all_json<T: DeserializeOwned>(&self, def: Def, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.raw_range(def, prefix, &prefix_end(prefix), false, MAX_SCAN)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// The run ids an index holds for keys in `[start, end)`, in key order.
    fn index_ids(
        &self,
        def: Def,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .raw_range(def, start, end, false, limit)?
            .into_iter()
            .map(|(_, id)| id_of(&id))
            .collect())
    }

    fn pool(&self, name: &str) -> Result<Option<WorkPool>, StoreError> {
        self.get_json(tables::POOLS, name)
    }
    fn pools(&self) -> Result<Vec<WorkPool>, StoreError> {
        self.all_json(tables::POOLS, "")
    }
    fn queue(&self, pool: &str, name: &str) -> Result<Option<WorkQueue>, StoreError> {
        self.get_json(tables::QUEUES, &pool_member_key(pool, name))
    }
    /// A pool's queues, highest priority (lowest number) first.
    fn queues(&self, pool: &str) -> Result<Vec<WorkQueue>, StoreError> {
        let mut queues: Vec<WorkQueue> = self.all_json(tables::QUEUES, &format!("{pool}\0"))?;
        queues.sort_by_key(|q| q.priority);
        Ok(queues)
    }
    fn worker(&self, pool: &str, name: &str) -> Result<Option<Worker>, StoreError> {
        self.get_json(tables::WORKERS, &pool_member_key(pool, name))
    }
    fn workers(&self, pool: &str) -> Result<Vec<Worker>, StoreError> {
        self.all_json(tables::WORKERS, &format!("{pool}\0"))
    }
    fn all_workers(&self) -> Result<Vec<Worker>, StoreError> {
        self.all_json(tables::WORKERS, "")
    }
    fn deployment(&self, full_name: &str) -> Result<Option<Deployment>, StoreError> {
        self.get_json(tables::DEPLOYMENTS, full_name)
    }
    fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.all_json(tables::DEPLOYMENTS, "")
    }
    fn run(&self, id: &str) -> Result<Option<FlowRun>, StoreError> {
        self.get_json(tables::RUNS, id)
    }
    fn token(&self, name: &str) -> Result<Option<ApiToken>, StoreError> {
        self.get_json(tables::TOKENS, name)
    }
    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.all_json(tables::TOKENS, "")
    }
    /// The key named API tokens are hashed under, once the first was made.
    fn token_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self
            .raw_get(tables::KEYS, TOKEN_KEY)?
            .and_then(|bytes| bytes.as_slice().try_into().ok()))
    }

    /// Newest first, through the most selective index for the filter.
    fn runs_page(
        &self,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RunPage, StoreError> {
        let (def, prefix) = if let Some(deployment) = &filter.deployment {
            (tables::IDX_DEPLOYMENT, format!("{deployment}\0"))
        } else if let Some(pool) = &filter.pool {
            (tables::IDX_POOL, format!("{pool}\0"))
        } else if filter.late && filter.states.is_empty() {
            (tables::IDX_STATE, format!("{}\0", StateType::Scheduled))
        } else if let ([state], false) = (filter.states.as_slice(), filter.late) {
            (tables::IDX_STATE, format!("{state}\0"))
        } else {
            (tables::IDX_CREATED, String::new())
        };
        // A cursor is a position in the index: the page starts just below
        // it, kept within this listing's keys whatever the cursor holds.
        let listing_end = prefix_end(&prefix);
        let mut end = match cursor.map(decode_cursor).transpose()? {
            Some(position) if position < listing_end => position,
            _ => listing_end,
        };
        let mut runs = Vec::with_capacity(limit);
        let mut scanned = 0;
        while runs.len() < limit && scanned < MAX_SCAN {
            let chunk = self.raw_range(def, &prefix, &end, true, (limit - runs.len()).max(64))?;
            let Some((last_key, _)) = chunk.last() else {
                return Ok(RunPage {
                    runs,
                    next_cursor: None,
                    total: None,
                });
            };
            end = last_key.clone();
            scanned += chunk.len();
            for (i, (key, id)) in chunk.iter().enumerate() {
                let id = String::from_utf8_lossy(id);
                let Some(run) = self.run(&id)? else { continue };
                let keep = filter.keeps(
                    &run.pool,
                    &run.deployment,
                    run.state.state_type,
                    super::find::is_late(&run),
                    &run.name,
                ) && filter.since.is_none_or(|since| run.scheduled_at >= since)
                    && filter.until.is_none_or(|until| run.scheduled_at <= until);
                if keep {
                    runs.push(run);
                    if runs.len() == limit {
                        // No cursor to an empty page when nothing older is indexed.
                        let older = i + 1 < chunk.len()
                            || !self.raw_range(def, &prefix, key, true, 1)?.is_empty();
                        return Ok(RunPage {
                            runs,
                            next_cursor: older.then(|| encode_cursor(key)),
                            total: None,
                        });
                    }
                }
            }
        }
        Ok(RunPage {
            runs,
            next_cursor: Some(encode_cursor(&end)),
            total: None,
        })
    }

    /// SCHEDULED runs of one queue due at `now`, oldest first.
    fn due_runs(
        &self,
        pool: &str,
        queue: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{pool}\0{queue}\0");
        let due_before = format!("{prefix}{}\u{10FFFF}", time_key(now));
        // The queue's whole range, cut at `now` here: every claim then reads
        // the same range, which the PostgreSQL writer's cache can hold.
        Ok(self
            .raw_range(tables::IDX_DUE, &prefix, &prefix_end(&prefix), false, limit)?
            .into_iter()
            .take_while(|(key, _)| *key < due_before)
            .map(|(_, id)| id_of(&id))
            .collect())
    }

    /// When the first SCHEDULED run of a queue due after `now` is due, if any.
    fn next_due_after(
        &self,
        pool: &str,
        queue: &str,
        now: Timestamp,
    ) -> Result<Option<i64>, StoreError> {
        let prefix = format!("{pool}\0{queue}\0");
        let start = format!("{prefix}{}", time_key(now));
        let first = self.raw_range(tables::IDX_DUE, &start, &prefix_end(&prefix), false, 1)?;
        Ok(first
            .first()
            .and_then(|(key, _)| key[prefix.len()..].split('\0').next()?.parse().ok()))
    }

    /// SCHEDULED runs whose time is before `before` and not yet marked Late.
    fn late_candidates(&self, before: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        self.index_ids(tables::IDX_LATE, "", &time_key(before), limit)
    }

    /// Active runs held by a worker.
    fn worker_runs(&self, pool: &str, worker: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{pool}\0{worker}\0");
        self.index_ids(tables::IDX_WORKER, &prefix, &prefix_end(&prefix), MAX_SCAN)
    }

    /// CANCELLING runs held by a worker. Read through the pool's whole
    /// (short) list, which a batch of claims by different workers shares.
    fn worker_cancelling(&self, pool: &str, worker: &str) -> Result<Vec<String>, StoreError> {
        let pool_prefix = format!("{pool}\0");
        let prefix = format!("{pool}\0{worker}\0");
        Ok(self
            .raw_range(
                tables::IDX_CANCELLING,
                &pool_prefix,
                &prefix_end(&pool_prefix),
                false,
                MAX_SCAN,
            )?
            .into_iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, id)| id_of(&id))
            .collect())
    }

    /// Future SCHEDULED runs the scheduler made for a deployment, by time.
    fn auto_scheduled(&self, deployment_id: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let prefix = format!("{deployment_id}\0");
        Ok(self
            .raw_range(
                tables::IDX_AUTO,
                &prefix,
                &prefix_end(&prefix),
                false,
                MAX_SCAN,
            )?
            .into_iter()
            .filter_map(|(key, id)| {
                Some((
                    key[prefix.len()..].split('\0').next()?.parse().ok()?,
                    id_of(&id),
                ))
            })
            .collect())
    }

    /// Runs holding a slot (PENDING, RUNNING, CANCELLING) in `slots`.
    fn active_runs(&self, slots: Slots<'_>) -> Result<u64, StoreError> {
        counter_value(self, &slots.key())
    }

    /// Log lines after `after` (a sequence number), oldest first.
    fn logs(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        let prefix = format!("{run_id}\0");
        let start = match after {
            Some(seq) => format!("{prefix}{:016x}", seq + 1),
            None => prefix.clone(),
        };
        self.raw_range(tables::LOGS, &start, &prefix_end(&prefix), false, limit)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    fn last_log_seq(&self, run_id: &str) -> Result<Option<u64>, StoreError> {
        let prefix = format!("{run_id}\0");
        let last = self.raw_range(tables::LOGS, &prefix, &prefix_end(&prefix), true, 1)?;
        Ok(last
            .first()
            .and_then(|(key, _)| u64::from_str_radix(&key[prefix.len()..], 16).ok()))
    }
}

impl<T: Raw> Records for T {}

fn id_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What an active run holds a slot of: the concurrency limits count these.
/// The counters behind them are kept by [`Writer::put_run`] alone.
#[derive(Debug, Clone, Copy)]
pub enum Slots<'a> {
    Pool(&'a str),
    Queue { pool: &'a str, queue: &'a str },
    Deployment(&'a str),
}

impl Slots<'_> {
    fn key(self) -> String {
        match self {
            Slots::Pool(pool) => format!("pool\0{pool}"),
            Slots::Queue { pool, queue } => format!("queue\0{pool}\0{queue}"),
            Slots::Deployment(deployment) => format!("deployment\0{deployment}"),
        }
    }
}

fn counter_value(r: &(impl Raw + ?Sized), key: &str) -> Result<u64, StoreError> {
    Ok(r.raw_get(tables::COUNTERS, key)?.map_or(0, |b| {
        u64::from_le_bytes(b.as_slice().try_into().unwrap_or([0; 8]))
    }))
}

fn run_counters(run: &FlowRun) -> Vec<String> {
    if !run.state.state_type.is_active() {
        return Vec::new();
    }
    vec![
        Slots::Pool(&run.pool).key(),
        Slots::Queue {
            pool: &run.pool,
            queue: &run.queue,
        }
        .key(),
        Slots::Deployment(&run.deployment).key(),
    ]
}

/// Every index entry a run should have in its current state: the table,
/// the key and the value (the run's id, but for the run list's summary).
fn run_index_entries(run: &FlowRun) -> Result<Vec<(Def, String, Vec<u8>)>, StoreError> {
    let id_value = |(def, key): (Def, String)| (def, key, run.id.clone().into_bytes());
    let mut entries: Vec<_> = run_id_entries(run).into_iter().map(id_value).collect();
    entries.push(super::find::summary_entry(run)?);
    Ok(entries)
}

/// The index entries whose value is the run's id.
fn run_id_entries(run: &FlowRun) -> Vec<(Def, String)> {
    let created = time_key(run.created);
    let scheduled = time_key(run.scheduled_at);
    let id = &run.id;
    let state = run.state.state_type;
    let mut entries = vec![
        (tables::IDX_CREATED, format!("{created}\0{id}")),
        (tables::IDX_STATE, format!("{state}\0{created}\0{id}")),
        (tables::IDX_POOL, format!("{}\0{created}\0{id}", run.pool)),
        (
            tables::IDX_DEPLOYMENT,
            format!("{}\0{created}\0{id}", run.deployment),
        ),
    ];
    if state == StateType::Scheduled {
        entries.push((
            tables::IDX_DUE,
            format!("{}\0{}\0{scheduled}\0{id}", run.pool, run.queue),
        ));
        if run.state.name == "Scheduled" {
            entries.push((tables::IDX_LATE, format!("{scheduled}\0{id}")));
        }
        if run.auto_scheduled {
            entries.push((
                tables::IDX_AUTO,
                format!("{}\0{scheduled}\0{id}", run.deployment_id),
            ));
        }
    }
    if state.is_active()
        && let Some(worker) = &run.worker
    {
        entries.push((tables::IDX_WORKER, format!("{}\0{worker}\0{id}", run.pool)));
        if state == StateType::Cancelling {
            entries.push((
                tables::IDX_CANCELLING,
                format!("{}\0{worker}\0{id}", run.pool),
            ));
        }
    }
    entries
}

impl Writer<'_> {
    pub fn put_pool(&mut self, pool: &WorkPool) -> Result<(), StoreError> {
        self.raw_put(tables::POOLS, &pool.name, &encode(pool)?)?;
        self.changes.push(Change::Pool { pool: pool.clone() });
        Ok(())
    }
    pub fn delete_pool(&mut self, name: &str) -> Result<(), StoreError> {
        for queue in self.queues(name)? {
            self.delete_queue(name, &queue.name)?;
        }
        for worker in self.workers(name)? {
            self.raw_delete(tables::WORKERS, &pool_member_key(name, &worker.name))?;
        }
        self.raw_delete(tables::POOLS, name)?;
        self.changes.push(Change::PoolDeleted { name: name.into() });
        Ok(())
    }
    pub fn put_queue(&mut self, queue: &WorkQueue) -> Result<(), StoreError> {
        self.raw_put(
            tables::QUEUES,
            &pool_member_key(&queue.pool, &queue.name),
            &encode(queue)?,
        )
    }
    pub fn delete_queue(&mut self, pool: &str, name: &str) -> Result<(), StoreError> {
        self.raw_delete(tables::QUEUES, &pool_member_key(pool, name))
    }
    pub fn put_worker(&mut self, worker: &Worker) -> Result<(), StoreError> {
        self.raw_put(
            tables::WORKERS,
            &pool_member_key(&worker.pool, &worker.name),
            &encode(worker)?,
        )?;
        self.changes.push(Change::Worker {
            worker: worker.clone(),
        });
        Ok(())
    }
    pub fn put_deployment(&mut self, deployment: &Deployment) -> Result<(), StoreError> {
        self.raw_put(
            tables::DEPLOYMENTS,
            &deployment.full_name(),
            &encode(deployment)?,
        )
    }
    pub fn delete_deployment(&mut self, full_name: &str) -> Result<(), StoreError> {
        self.raw_delete(tables::DEPLOYMENTS, full_name)
    }
    /// Tokens are kept out of the change feed: its readers are not all admins.
    pub fn put_token(&mut self, token: &ApiToken) -> Result<(), StoreError> {
        self.raw_put(tables::TOKENS, &token.name, &encode(token)?)
    }
    pub fn delete_token(&mut self, name: &str) -> Result<(), StoreError> {
        self.raw_delete(tables::TOKENS, name)
    }
    /// Sets the tokens' key; made once, never replaced (every stored hash
    /// is under it).
    pub fn put_token_key(&mut self, key: &[u8; 32]) -> Result<(), StoreError> {
        self.raw_put(tables::KEYS, TOKEN_KEY, key)
    }

    /// Writes a run and brings its index entries and counters along.
    pub fn put_run(&mut self, old: Option<&FlowRun>, new: &FlowRun) -> Result<(), StoreError> {
        let before = old.map(run_index_entries).transpose()?.unwrap_or_default();
        let after = run_index_entries(new)?;
        // An entry whose value changed is deleted, then written anew.
        for entry in before.iter().filter(|e| !after.contains(e)) {
            self.raw_delete(entry.0, &entry.1)?;
        }
        for entry in after.iter().filter(|e| !before.contains(e)) {
            self.raw_put(entry.0, &entry.1, &entry.2)?;
        }
        let old_counters = old.map(run_counters).unwrap_or_default();
        let new_counters = run_counters(new);
        for key in old_counters.iter().filter(|k| !new_counters.contains(k)) {
            self.add_to_counter(key, -1)?;
        }
        for key in new_counters.iter().filter(|k| !old_counters.contains(k)) {
            self.add_to_counter(key, 1)?;
        }
        self.raw_put(tables::RUNS, &new.id, &encode(new)?)?;
        self.changes.push(Change::Run {
            flow_run: Box::new(new.clone()),
        });
        Ok(())
    }

    /// Deletes a run with its index entries, counters and log lines.
    pub fn delete_run(&mut self, run: &FlowRun) -> Result<(), StoreError> {
        for (def, key, _) in run_index_entries(run)? {
            self.raw_delete(def, &key)?;
        }
        for key in run_counters(run) {
            self.add_to_counter(&key, -1)?;
        }
        let prefix = format!("{}\0", run.id);
        let end = prefix_end(&prefix);
        loop {
            let lines = self.raw_range(tables::LOGS, &prefix, &end, false, 10_000)?;
            if lines.is_empty() {
                break;
            }
            for (key, _) in lines {
                self.raw_delete(tables::LOGS, &key)?;
            }
        }
        self.raw_delete(tables::RUNS, &run.id)?;
        self.changes.push(Change::RunDeleted {
            flow_run_id: run.id.clone(),
            pool: run.pool.clone(),
        });
        Ok(())
    }

    /// Up to `limit` of a deployment's runs in `state`, newest first.
    pub fn deployment_runs_in(
        &self,
        deployment: &str,
        state: StateType,
        limit: usize,
    ) -> Result<Vec<FlowRun>, StoreError> {
        let filter = RunFilter {
            deployment: Some(deployment.to_string()),
            states: vec![state],
            ..RunFilter::default()
        };
        Ok(self.runs_page(&filter, None, limit)?.runs)
    }

    fn add_to_counter(&mut self, key: &str, delta: i64) -> Result<(), StoreError> {
        let value = counter_value(self, key)?.saturating_add_signed(delta);
        if value == 0 {
            self.raw_delete(tables::COUNTERS, key)
        } else {
            self.raw_put(tables::COUNTERS, key, &value.to_le_bytes())
        }
    }

    /// Appends lines, numbering them after the run's last line.
    pub fn append_logs(&mut self, run_id: &str, lines: Vec<LogLine>) -> Result<u64, StoreError> {
        let mut seq = self.last_log_seq(run_id)?.map_or(0, |s| s + 1);
        for mut line in lines {
            line.seq = seq;
            self.raw_put(
                tables::LOGS,
                &format!("{run_id}\0{seq:016x}"),
                &encode(&line)?,
            )?;
            self.changes.push(Change::Log {
                flow_run_id: run_id.into(),
                line,
            });
            seq += 1;
        }
        Ok(seq)
    }
}

/// Cursors are index keys, which hold NUL separators: hex keeps them opaque
/// and safe in a URL, a shell argument and JSON.
pub(super) fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Any pairs of hex digits are a position; bytes that are not UTF-8 sort
/// where their replacement character does.
pub(super) fn decode_cursor(cursor: &str) -> Result<String, StoreError> {
    let bytes = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Some(hex_digit(*high)? * 16 + hex_digit(*low)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(StoreError::BadCursor)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}
