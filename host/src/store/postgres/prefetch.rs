//! What the next batch will likely read, read in the round trip that takes
//! the write lock.
//!
//! With several replicas writing, a batch mostly finds its cache emptied
//! (another replica wrote since this writer's last batch) and must read a
//! claim's pool, queues, counters and due runs again, one round trip each,
//! while holding the lock every replica waits for. What two batches in a
//! row both read, the next is likely to read too: when the last batch found
//! its cache emptied, the next one sends those reads right behind the lock
//! statement, and their answers come back with the lock. With one replica
//! the cache stays warm, and nothing is noted or sent.

use super::cache::Cache;
use super::read::Rows;
use crate::store::tables::Def;
use std::collections::{HashMap, HashSet};
use tokio_postgres::Row;

/// At most this many reads go with the lock.
const MAX_LIKELY: usize = 64;

/// The first `lim` rows of each range, by the range's place in the list.
pub(super) const RANGES_ASC: &str = "SELECT r.i, k.key, k.value \
     FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int8[]) WITH ORDINALITY AS r(tbl, lo, hi, lim, i) \
     CROSS JOIN LATERAL (SELECT key, value FROM kv WHERE kv.tbl = r.tbl AND kv.key >= r.lo \
     AND kv.key < r.hi ORDER BY kv.key LIMIT r.lim) k ORDER BY r.i, k.key";
pub(super) const RANGES_DESC: &str = "SELECT r.i, k.key, k.value \
     FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int8[]) WITH ORDINALITY AS r(tbl, lo, hi, lim, i) \
     CROSS JOIN LATERAL (SELECT key, value FROM kv WHERE kv.tbl = r.tbl AND kv.key >= r.lo \
     AND kv.key < r.hi ORDER BY kv.key DESC LIMIT r.lim) k ORDER BY r.i, k.key DESC";

/// One read a batch made of the database (through the cache or not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Read {
    Get(Def, String),
    Range {
        def: Def,
        start: String,
        end: String,
        descending: bool,
        /// The limit the database is asked for.
        asked: usize,
    },
}

#[derive(Default)]
pub(super) struct Reads {
    /// The current batch found its cache emptied.
    cold: bool,
    current: HashSet<Read>,
    previous: HashSet<Read>,
    likely: Vec<Read>,
}

impl Reads {
    /// Whether the batch just begun found its cache emptied.
    pub(super) fn begun(&mut self, cold: bool) {
        self.cold = cold;
    }

    pub(super) fn note(&mut self, read: impl FnOnce() -> Read) {
        if self.cold {
            self.current.insert(read());
        }
    }

    /// The batch is over: what it and the one before both read is likely next.
    pub(super) fn finish(&mut self) {
        self.likely = self
            .current
            .intersection(&self.previous)
            .take(MAX_LIKELY)
            .cloned()
            .collect();
        self.previous = std::mem::take(&mut self.current);
    }

    /// What to send with the lock: nothing while the cache stays warm.
    pub(super) fn likely(&self) -> Vec<Read> {
        if self.cold {
            self.likely.clone()
        } else {
            Vec::new()
        }
    }
}

/// The parameters of `GET_MANY`, `RANGES_ASC` and `RANGES_DESC` for `reads`.
pub(super) struct Asks<'a> {
    pub(super) gets: (Vec<&'static str>, Vec<&'a [u8]>),
    pub(super) ascending: Ranges<'a>,
    pub(super) descending: Ranges<'a>,
}

#[derive(Default)]
pub(super) struct Ranges<'a> {
    pub(super) tables: Vec<&'static str>,
    pub(super) starts: Vec<&'a [u8]>,
    pub(super) ends: Vec<&'a [u8]>,
    pub(super) limits: Vec<i64>,
}

impl Ranges<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

impl<'a> Asks<'a> {
    pub(super) fn of(reads: &'a [Read]) -> Asks<'a> {
        let mut asks = Asks {
            gets: (Vec::new(), Vec::new()),
            ascending: Ranges::default(),
            descending: Ranges::default(),
        };
        for read in reads {
            match read {
                Read::Get(def, key) => {
                    asks.gets.0.push(def.name());
                    asks.gets.1.push(key.as_bytes());
                }
                Read::Range {
                    def,
                    start,
                    end,
                    descending,
                    asked,
                } => {
                    let ranges = if *descending {
                        &mut asks.descending
                    } else {
                        &mut asks.ascending
                    };
                    ranges.tables.push(def.name());
                    ranges.starts.push(start.as_bytes());
                    ranges.ends.push(end.as_bytes());
                    ranges
                        .limits
                        .push(i64::try_from(*asked).unwrap_or(i64::MAX));
                }
            }
        }
        asks
    }
}

/// The answers to a list of reads, by each read's place in its
/// statement's list (counted from 1, as `WITH ORDINALITY` does).
#[derive(Default)]
pub(super) struct Answers {
    gets: HashMap<i64, Vec<u8>>,
    /// `None`: a range with a key that is not text, left to the batch to read.
    ascending: HashMap<i64, Option<Rows>>,
    descending: HashMap<i64, Option<Rows>>,
}

impl Answers {
    /// From the rows of `GET_MANY`, `RANGES_ASC` and `RANGES_DESC`.
    pub(super) fn of(
        gets: &[Row],
        ascending: &[Row],
        descending: &[Row],
    ) -> Result<Answers, tokio_postgres::Error> {
        let mut answers = Answers::default();
        for row in gets {
            answers.gets.insert(row.try_get(0)?, row.try_get(1)?);
        }
        for (rows, ranges) in [
            (ascending, &mut answers.ascending),
            (descending, &mut answers.descending),
        ] {
            for row in rows {
                let key = String::from_utf8(row.try_get(1)?).ok();
                add_row(ranges, row.try_get(0)?, key, row.try_get(2)?);
            }
        }
        Ok(answers)
    }

    /// Keeps the answers to `reads` (the list they were asked for) in the cache.
    pub(super) fn keep(mut self, cache: &mut Cache, reads: &[Read]) {
        let (mut gets, mut ascending, mut descending) = (0, 0, 0);
        for read in reads {
            match read {
                Read::Get(def, key) => {
                    gets += 1;
                    cache.keep_get(def.name(), key, self.gets.remove(&gets));
                }
                Read::Range {
                    def,
                    start,
                    end,
                    descending: desc,
                    asked,
                } => {
                    let (place, ranges) = if *desc {
                        descending += 1;
                        (descending, &mut self.descending)
                    } else {
                        ascending += 1;
                        (ascending, &mut self.ascending)
                    };
                    // No row: an empty range.
                    if let Some(rows) = ranges.remove(&place).unwrap_or(Some(Vec::new())) {
                        cache.keep_range(def.name(), (start, end), *desc, *asked, rows);
                    }
                }
            }
        }
    }
}

/// A row of the range at `place`; a key that is not text spoils the range.
fn add_row(
    ranges: &mut HashMap<i64, Option<Rows>>,
    place: i64,
    key: Option<String>,
    value: Vec<u8>,
) {
    let range = ranges.entry(place).or_insert(Some(Vec::new()));
    match (range.as_mut(), key) {
        (Some(rows), Some(key)) => rows.push((key, value)),
        _ => *range = None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::{POOLS, QUEUES, RUNS};

    fn range(def: Def, start: &str, descending: bool) -> Read {
        Read::Range {
            def,
            start: start.into(),
            end: format!("{start}\u{10FFFF}"),
            descending,
            asked: 64,
        }
    }

    fn row(key: &str) -> (String, Vec<u8>) {
        (key.into(), key.as_bytes().to_vec())
    }

    #[test]
    fn what_two_cold_batches_both_read_goes_with_the_next_lock_and_nothing_while_warm() {
        let mut reads = Reads::default();
        let pool = || Read::Get(POOLS, "p".into());
        reads.begun(true);
        reads.note(pool);
        reads.note(|| Read::Get(RUNS, "r1".into()));
        reads.finish();
        assert_eq!(reads.likely(), vec![], "one batch says nothing yet");
        reads.begun(true);
        reads.note(pool);
        reads.note(|| Read::Get(RUNS, "r2".into()));
        reads.finish();
        assert_eq!(
            reads.likely(),
            vec![pool()],
            "r1 and r2 were read once each"
        );
        reads.begun(false);
        reads.note(|| panic!("a warm batch notes nothing"));
        assert_eq!(
            reads.likely(),
            vec![],
            "the cache was kept: nothing to send"
        );
    }

    #[test]
    fn answers_go_to_the_read_at_their_place_in_each_list() {
        let reads = [
            Read::Get(POOLS, "p".into()),
            range(QUEUES, "p\0", false),
            Read::Get(RUNS, "gone".into()),
            range(QUEUES, "q\0", true),
            range(QUEUES, "r\0", false),
            range(QUEUES, "s\0", false),
        ];
        let mut answers = Answers::default();
        answers.gets.insert(1, b"pool".to_vec());
        for (descending, key) in [(false, "p\0a"), (false, "p\0b"), (true, "q\0z")] {
            let (key, value) = row(key);
            let ranges = if descending {
                &mut answers.descending
            } else {
                &mut answers.ascending
            };
            add_row(ranges, 1, Some(key), value);
        }
        // Place 2 of the ascending list has no rows; place 3 a key not text.
        add_row(&mut answers.ascending, 3, None, b"x".to_vec());
        let mut cache = Cache::default();
        answers.keep(&mut cache, &reads);

        assert_eq!(cache.get("pools", "p"), Some(Some(b"pool".to_vec())));
        assert_eq!(cache.get("runs", "gone"), Some(None), "known absent");
        let whole = |start: &str, descending| {
            cache.range(
                "queues",
                (start, &format!("{start}\u{10FFFF}")),
                descending,
                10,
            )
        };
        assert_eq!(whole("p\0", false), Some(vec![row("p\0a"), row("p\0b")]));
        assert_eq!(whole("q\0", true), Some(vec![row("q\0z")]));
        assert_eq!(whole("r\0", false), Some(vec![]), "an empty range");
        assert_eq!(whole("s\0", false), None, "left to the batch to read");
    }
}
