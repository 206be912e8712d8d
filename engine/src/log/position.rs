//! A consumer group's position in one partition: every offset below `next_offset` is
//! processed, and so is every offset in `finished` (all above `next_offset`). Consumers
//! that work several records of a partition at once (the delivery worker) commit as soon as
//! any record finishes, so a stop or a crash redoes only records that were truly
//! unfinished.
//!
//! The finished set travels as the offset commit's metadata string (Kafka's
//! `OffsetCommit` metadata, kept beside the offset on the embedded log):
//! `h1:` then comma-separated runs `gap` or `gap+extra`, where `gap` is the distance from
//! the end of the previous run (from `next_offset` for the first) and `extra` the run's
//! length minus one. `{102,103,104,110}` above 100 is `h1:2+2,5`. Kafka brokers cap metadata
//! at `offset.metadata.max.bytes` (4096 by default): a longer set is cut at
//! [`MAX_METADATA`], dropping its highest runs, which are then processed again (a
//! duplicate, never a loss).

use std::collections::BTreeSet;

/// Longest metadata string written.
pub const MAX_METADATA: usize = 3072;
const PREFIX: &str = "h1:";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub next_offset: u64,
    /// Processed offsets above `next_offset`, ascending.
    pub finished: Vec<u64>,
}

impl Position {
    /// Everything below `next_offset` is processed, nothing above it.
    pub fn at(next_offset: u64) -> Self {
        Position { next_offset, finished: Vec::new() }
    }

    /// The position where the lowest unfinished offset is `lowest_unfinished` (or, when
    /// nothing is unfinished, `end`: one past the last record received), with `finished`
    /// the processed offsets at or above it.
    pub fn from_parts(lowest_unfinished: Option<u64>, end: u64, finished: &BTreeSet<u64>) -> Self {
        match lowest_unfinished {
            None => Position::at(end),
            Some(low) => Position { next_offset: low, finished: finished.range(low + 1..).copied().collect() },
        }
    }

    /// Whether `offset` was processed.
    pub fn is_done(&self, offset: u64) -> bool {
        offset < self.next_offset || self.finished.binary_search(&offset).is_ok()
    }

    /// The metadata string (empty when nothing above `next_offset` is finished).
    pub fn metadata(&self) -> String {
        if self.finished.is_empty() {
            return String::new();
        }
        let mut out = String::from(PREFIX);
        let mut prev_end = self.next_offset; // one past the previous run
        let mut i = 0;
        while i < self.finished.len() {
            let start = self.finished[i];
            let mut j = i;
            while j + 1 < self.finished.len() && self.finished[j + 1] == self.finished[j] + 1 {
                j += 1;
            }
            let gap = start.saturating_sub(prev_end);
            let run = if j > i { format!("{gap}+{}", j - i) } else { gap.to_string() };
            let sep = if out.len() > PREFIX.len() { 1 } else { 0 };
            if out.len() + sep + run.len() > MAX_METADATA {
                break; // the rest is processed again: a duplicate, never a loss
            }
            if sep == 1 {
                out.push(',');
            }
            out.push_str(&run);
            prev_end = self.finished[j] + 1;
            i = j + 1;
        }
        out
    }

    /// The position committed as `next_offset` with `metadata`. Metadata that is not ours
    /// (or damaged) is ignored: the records above `next_offset` are then processed again.
    pub fn parse(next_offset: u64, metadata: &str) -> Self {
        let mut position = Position::at(next_offset);
        let Some(body) = metadata.strip_prefix(PREFIX) else { return position };
        let mut prev_end = next_offset;
        let mut finished = Vec::new();
        for run in body.split(',').filter(|r| !r.is_empty()) {
            let (gap, extra) = match run.split_once('+') {
                Some((g, e)) => (g.parse::<u64>(), e.parse::<u64>()),
                None => (run.parse::<u64>(), Ok(0)),
            };
            let (Ok(gap), Ok(extra)) = (gap, extra) else { return position };
            let Some(start) = prev_end.checked_add(gap) else { return position };
            let Some(end) = start.checked_add(extra) else { return position };
            if extra > 1 << 20 {
                return position; // not something we wrote
            }
            finished.extend(start..=end);
            prev_end = end + 1;
        }
        position.finished = finished;
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = Position { next_offset: 100, finished: vec![102, 103, 104, 110] };
        assert_eq!(p.metadata(), "h1:2+2,5");
        assert_eq!(Position::parse(100, &p.metadata()), p);
        let adjacent = Position { next_offset: 7, finished: vec![8, 9] };
        assert_eq!(adjacent.metadata(), "h1:1+1");
        assert_eq!(Position::parse(7, &adjacent.metadata()), adjacent);
        assert_eq!(Position::at(5).metadata(), "");
        assert_eq!(Position::parse(5, ""), Position::at(5));
    }

    #[test]
    fn done_offsets() {
        let p = Position { next_offset: 10, finished: vec![12, 15] };
        assert!(p.is_done(3) && p.is_done(9) && p.is_done(12) && p.is_done(15));
        assert!(!p.is_done(10) && !p.is_done(11) && !p.is_done(13) && !p.is_done(16));
    }

    #[test]
    fn from_parts_takes_the_lowest_unfinished() {
        let finished: BTreeSet<u64> = [3, 5, 6, 9].into_iter().collect();
        assert_eq!(Position::from_parts(Some(4), 10, &finished), Position { next_offset: 4, finished: vec![5, 6, 9] });
        assert_eq!(Position::from_parts(None, 10, &finished), Position::at(10));
    }

    #[test]
    fn foreign_or_damaged_metadata_is_ignored() {
        for bad in ["x", "h1:a", "h1:1+", "h1:18446744073709551615+5", "h1:1+99999999999"] {
            assert_eq!(Position::parse(4, bad), Position::at(4), "{bad}");
        }
    }

    #[test]
    fn long_sets_are_cut_below_the_broker_limit_and_only_lose_the_top() {
        // The worst case: every other offset of a large window finished.
        let finished: Vec<u64> = (0..5000u64).map(|i| 1_000_000 + 2 * i + 1).collect();
        let p = Position { next_offset: 1_000_000, finished: finished.clone() };
        let meta = p.metadata();
        assert!(meta.len() <= MAX_METADATA);
        let back = Position::parse(1_000_000, &meta);
        assert!(!back.finished.is_empty());
        assert_eq!(back.finished[..], finished[..back.finished.len()], "a prefix of the set");
    }
}
