//! What the writer knows of the database between its batches.
//!
//! A batch holds the write lock, so what it reads stays true until it
//! commits; the writer keeps those answers, and the batch's own writes,
//! for its next batches. Every batch that writes numbers itself in
//! `writer_version`: a batch that finds there the number of this writer's
//! own last batch knows nobody wrote since, and reads from the cache (a
//! pool, its queues, its counters, its due runs need no round trip);
//! otherwise the cache starts empty. With one replica it is always kept;
//! with several, across their consecutive batches only. The cache may
//! forget anything at any time; it must never hold a value the database
//! does not.

use super::read::Rows;
use std::collections::HashMap;

/// Past about this many bytes the cache starts again, empty.
const MAX_BYTES: usize = 16 << 20;
/// Ranges kept per table; the oldest go first.
const MAX_RANGES: usize = 256;

#[derive(Default)]
pub(super) struct Cache {
    /// The last batch reflected here; `None` when unknown (the cache is
    /// then empty).
    version: Option<i64>,
    gets: HashMap<(&'static str, String), Option<Vec<u8>>>,
    ranges: HashMap<&'static str, Vec<Range>>,
    bytes: usize,
}

/// The rows of a key range in the order they were asked for: all of them
/// when `complete`, otherwise all from the range's first end up to the last
/// row held (nothing is known past that row).
struct Range {
    start: String,
    end: String,
    descending: bool,
    rows: Rows,
    complete: bool,
}

impl Range {
    /// Whether this range says for sure if `key` has a row.
    fn knows(&self, key: &str) -> bool {
        if key < self.start.as_str() || key >= self.end.as_str() {
            return false;
        }
        match (self.complete, self.rows.last()) {
            (true, _) => true,
            (false, None) => false,
            (false, Some((last, _))) if self.descending => key >= last.as_str(),
            (false, Some((last, _))) => key <= last.as_str(),
        }
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        if self.descending {
            self.rows.binary_search_by(|(k, _)| key.cmp(k.as_str()))
        } else {
            self.rows.binary_search_by(|(k, _)| k.as_str().cmp(key))
        }
    }

    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if !self.knows(key) {
            return;
        }
        match (self.position(key), value) {
            (Ok(i), Some(value)) => self.rows[i].1 = value.to_vec(),
            (Ok(i), None) => {
                self.rows.remove(i);
            }
            (Err(i), Some(value)) => self.rows.insert(i, (key.to_string(), value.to_vec())),
            (Err(_), None) => {}
        }
    }

    /// The first `limit` rows of `[start, end)` in this range's order, when
    /// this range holds them.
    fn answer(&self, start: &str, end: &str, limit: usize) -> Option<Rows> {
        if start < self.start.as_str() || end > self.end.as_str() {
            return None;
        }
        let found: Rows = self
            .rows
            .iter()
            .filter(|(k, _)| k.as_str() >= start && k.as_str() < end)
            .take(limit)
            .cloned()
            .collect();
        // Rows not held come after every row held, in the range's order.
        let whole = match (self.complete, self.rows.last()) {
            (true, _) => true,
            (false, None) => false,
            (false, Some((last, _))) if self.descending => start >= last.as_str(),
            (false, Some((last, _))) => end <= last.as_str(),
        };
        (found.len() >= limit || whole).then_some(found)
    }
}

impl Cache {
    pub(super) fn version(&self) -> Option<i64> {
        self.version
    }

    /// `Some(None)` when the key is known to have no row.
    pub(super) fn get(&self, table: &'static str, key: &str) -> Option<Option<Vec<u8>>> {
        if let Some(value) = self.gets.get(&(table, key.to_string())) {
            return Some(value.clone());
        }
        let range = self.ranges.get(table)?.iter().find(|r| r.knows(key))?;
        Some(range.position(key).ok().map(|i| range.rows[i].1.clone()))
    }

    pub(super) fn range(
        &self,
        table: &'static str,
        (start, end): (&str, &str),
        descending: bool,
        limit: usize,
    ) -> Option<Rows> {
        self.ranges
            .get(table)?
            .iter()
            .filter(|r| r.descending == descending)
            .find_map(|r| r.answer(start, end, limit))
    }

    /// Keeps what the database answered for a key.
    pub(super) fn keep_get(&mut self, table: &'static str, key: &str, value: Option<Vec<u8>>) {
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if let Some(Some(old)) = self.gets.insert((table, key.to_string()), value) {
            self.bytes = self.bytes.saturating_sub(key.len() + old.len());
        }
        self.grow(size);
    }

    /// Keeps what the database answered for a range asked with `asked` as
    /// its limit.
    pub(super) fn keep_range(
        &mut self,
        table: &'static str,
        (start, end): (&str, &str),
        descending: bool,
        asked: usize,
        rows: Rows,
    ) {
        self.grow(rows.iter().map(|(k, v)| k.len() + v.len()).sum());
        let kept = self.ranges.entry(table).or_default();
        kept.retain(|r| !(r.start == start && r.end == end && r.descending == descending));
        if kept.len() >= MAX_RANGES {
            kept.remove(0);
        }
        kept.push(Range {
            start: start.to_string(),
            end: end.to_string(),
            descending,
            complete: rows.len() < asked,
            rows,
        });
    }

    /// A committed write (`None`: a delete), of this replica or another.
    pub(super) fn apply(&mut self, table: &'static str, key: &str, value: Option<Vec<u8>>) {
        for range in self.ranges.get_mut(table).into_iter().flatten() {
            range.apply(key, value.as_deref());
        }
        self.keep_get(table, key, value);
    }

    /// Everything up to `version` is applied.
    pub(super) fn at(&mut self, version: i64) {
        self.version = Some(version);
    }

    /// Keeps nothing and knows no version: after any doubt (a failed batch,
    /// a new connection).
    pub(super) fn forget(&mut self) {
        self.empty();
        self.version = None;
    }

    /// Keeps nothing, still at its version (an empty cache is a true one).
    pub(super) fn empty(&mut self) {
        self.gets.clear();
        self.ranges.clear();
        self.bytes = 0;
    }

    fn grow(&mut self, bytes: usize) {
        self.bytes += bytes;
        if self.bytes > MAX_BYTES {
            self.empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[&str]) -> Rows {
        keys.iter()
            .map(|k| (k.to_string(), k.as_bytes().to_vec()))
            .collect()
    }

    fn keys(rows: Option<Rows>) -> Option<Vec<String>> {
        rows.map(|r| r.into_iter().map(|(k, _)| k).collect())
    }

    #[test]
    fn a_range_read_whole_answers_what_lies_inside_it_and_follows_writes() {
        let mut cache = Cache::default();
        cache.keep_range("t", ("a", "z"), false, 64, rows(&["b", "d", "f"]));
        assert_eq!(
            keys(cache.range("t", ("c", "g"), false, 10)),
            Some(vec!["d".into(), "f".into()])
        );
        assert_eq!(cache.get("t", "c"), Some(None), "known absent");
        cache.apply("t", "c", Some(b"c".to_vec()));
        cache.apply("t", "d", None);
        assert_eq!(
            keys(cache.range("t", ("a", "z"), false, 10)),
            Some(vec!["b".into(), "c".into(), "f".into()])
        );
        assert_eq!(
            cache.range("t", ("a", "z"), true, 10),
            None,
            "the other order was never read"
        );
        assert_eq!(cache.range("u", ("a", "z"), false, 10), None);
    }

    #[test]
    fn a_range_cut_short_knows_only_up_to_its_last_row() {
        let mut cache = Cache::default();
        // Asked for 2, got 2: there may be more after "d".
        cache.keep_range("t", ("a", "z"), false, 2, rows(&["b", "d"]));
        assert_eq!(
            keys(cache.range("t", ("a", "z"), false, 2)),
            Some(vec!["b".into(), "d".into()])
        );
        assert_eq!(cache.range("t", ("a", "z"), false, 3), None);
        assert_eq!(
            keys(cache.range("t", ("a", "c"), false, 5)),
            Some(vec!["b".into()])
        );
        assert_eq!(cache.get("t", "e"), None, "past the last row: unknown");
        // A row past the end held is not taken in, one before it is.
        cache.apply("t", "x", Some(b"x".to_vec()));
        cache.apply("t", "c", Some(b"c".to_vec()));
        assert_eq!(
            keys(cache.range("t", ("a", "z"), false, 3)),
            Some(vec!["b".into(), "c".into(), "d".into()])
        );
        // Deleting the last row held shrinks what is known.
        cache.apply("t", "d", None);
        cache.apply("t", "c", None);
        assert_eq!(
            keys(cache.range("t", ("a", "z"), false, 1)),
            Some(vec!["b".into()])
        );
        assert_eq!(cache.range("t", ("a", "z"), false, 2), None);
    }

    #[test]
    fn a_descending_range_cut_short_knows_from_its_last_row_up() {
        let mut cache = Cache::default();
        cache.keep_range("t", ("a", "z"), true, 2, rows(&["y", "m"]));
        assert_eq!(
            keys(cache.range("t", ("n", "z"), true, 5)),
            Some(vec!["y".into()])
        );
        assert_eq!(cache.range("t", ("a", "z"), true, 3), None);
        cache.apply("t", "p", Some(b"p".to_vec()));
        cache.apply("t", "b", Some(b"b".to_vec()));
        assert_eq!(
            keys(cache.range("t", ("a", "z"), true, 3)),
            Some(vec!["y".into(), "p".into(), "m".into()])
        );
        assert_eq!(
            cache.get("t", "b"),
            Some(Some(b"b".to_vec())),
            "a write is kept as a get"
        );
    }

    #[test]
    fn forgetting_drops_the_version_and_emptying_keeps_it() {
        let mut cache = Cache::default();
        cache.keep_get("t", "k", Some(b"v".to_vec()));
        cache.at(7);
        cache.empty();
        assert_eq!((cache.version(), cache.get("t", "k")), (Some(7), None));
        cache.forget();
        assert_eq!(cache.version(), None);
    }
}
