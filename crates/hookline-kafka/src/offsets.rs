//! Offsets that are safe to commit while records finish out of order.
//!
//! Architecture Invariant: the committed offset of a partition never passes a record whose
//! work is not yet durable; it is the lowest offset still pending (or one past the highest
//! finished when nothing is pending).
//!
//! Work finishes out of order, so past the committed offset some records are already done.
//! [`OffsetTracker::commit_metadata`] writes which are *not* done into the commit's metadata
//! (up to [`METADATA_BUDGET`] bytes); whoever takes the partition over reads it back as a
//! [`DoneFilter`] and skips the rest instead of doing them again.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    pending: BTreeSet<i64>,
    next: i64,
}

impl OffsetTracker {
    /// Records that work for `offset` has started.
    pub fn begin(&mut self, partition: i32, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        p.pending.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// Records that `offset` is durable; returns the partition's committable offset.
    pub fn finish(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        p.pending.remove(&offset);
        Some(p.committable())
    }

    /// Committable offset of every partition with activity.
    pub fn committable(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .map(|(k, p)| (*k, p.committable()))
            .collect()
    }

    pub fn pending(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }

    /// The commit metadata of `partition`: which records between its committable offset and
    /// the highest begun are not finished (see [`DoneFilter`]).
    pub fn commit_metadata(&self, partition: i32) -> String {
        let Some(p) = self.partitions.get(&partition) else {
            return String::new();
        };
        // Run lengths suit a few long runs; a bitmap suits finished and unfinished records
        // interleaved (many keys at once). The one that says more, in fewer bytes.
        let (runs, runs_upto) = p.runs_metadata();
        let (bits, bits_upto) = p.bitmap_metadata();
        match bits_upto.cmp(&runs_upto) {
            std::cmp::Ordering::Greater => bits,
            std::cmp::Ordering::Less => runs,
            std::cmp::Ordering::Equal if bits.len() < runs.len() => bits,
            std::cmp::Ordering::Equal => runs,
        }
    }

    /// Whether `offset` of `partition` is finished: begun and finished, or below everything
    /// still pending and below the highest begun (a partition never begun knows nothing).
    pub fn is_done(&self, partition: i32, offset: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| offset < p.next && !p.pending.contains(&offset))
    }

    /// The committable offset of `partition`, when anything of it was begun.
    pub fn committable_of(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).map(Partition::committable)
    }

    /// Takes a partition up where a [`DoneFilter`] left it: the records it names as not done
    /// are pending, every other one below where it speaks is finished.
    pub fn resume(&mut self, partition: i32, filter: &DoneFilter) {
        let p = self.partitions.entry(partition).or_default();
        for &(first, last) in &filter.pending {
            p.pending.extend(first..=last);
        }
        p.next = p.next.max(filter.upto);
    }

    /// Forgets a partition that was revoked.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

fn base36(mut n: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n <= 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// How much commit metadata a partition gets (brokers accept 4 KiB by default).
pub const METADATA_BUDGET: usize = 3000;
const METADATA_TAG: &str = "hl2";
const BITMAP_DIGITS: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Which records past a committed offset are already done, read from commit metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneFilter {
    base: i64,
    upto: i64,
    /// Not done, sorted, inclusive ranges.
    pending: Vec<(i64, i64)>,
}

impl DoneFilter {
    /// The filter of a partition committed at `base` with `metadata`; `None` when the
    /// metadata says nothing (or is not ours).
    pub fn parse(base: i64, metadata: &str) -> Option<Self> {
        let mut parts = metadata.splitn(3, ';');
        if parts.next()? != METADATA_TAG {
            return None;
        }
        let span = parts.next()?;
        if let Some(span) = span.strip_prefix('b') {
            let upto = base + i64::from_str_radix(span, 36).ok()?;
            let mut pending: Vec<(i64, i64)> = Vec::new();
            for (c, ch) in parts.next()?.bytes().enumerate() {
                let v = BITMAP_DIGITS.iter().position(|d| *d == ch)?;
                for bit in 0..6 {
                    let o = base + (c * 6 + bit) as i64;
                    if v & (1 << bit) != 0 && o < upto {
                        match pending.last_mut() {
                            Some((_, end)) if *end + 1 == o => *end = o,
                            _ => pending.push((o, o)),
                        }
                    }
                }
            }
            return (upto > base).then_some(Self {
                base,
                upto,
                pending,
            });
        }
        let upto = base + i64::from_str_radix(span, 36).ok()?;
        let mut pending = Vec::new();
        let mut at = base;
        let mut not_done = true;
        for run in parts.next()?.split('.').filter(|s| !s.is_empty()) {
            let n = i64::from_str_radix(run, 36).ok()?;
            if not_done {
                pending.push((at, at + n - 1));
            }
            at += n;
            not_done = !not_done;
        }
        (upto > base).then_some(Self {
            base,
            upto,
            pending,
        })
    }

    /// Whether the record at `offset` was done by the previous owner.
    pub fn done(&self, offset: i64) -> bool {
        if offset < self.base || offset >= self.upto {
            return false;
        }
        let i = self.pending.partition_point(|(a, _)| *a <= offset);
        !(i > 0 && offset <= self.pending[i - 1].1)
    }

    /// Whether every offset from `offset` on is past the filter.
    pub fn passed(&self, offset: i64) -> bool {
        offset >= self.upto
    }
}

impl Partition {
    /// Alternating run lengths from the committable offset: not done, done, ... (base 36).
    /// Also returns the offset up to which it speaks.
    fn runs_metadata(&self) -> (String, i64) {
        let base = self.committable();
        let mut runs: Vec<i64> = Vec::new();
        let mut at = base;
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for &o in &self.pending {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == o => *end = o,
                _ => ranges.push((o, o)),
            }
        }
        let mut upto = self.next;
        let mut body = String::new();
        for (a, b) in ranges {
            let (done, pending) = (a - at, b - a + 1);
            let mut item = String::new();
            if !runs.is_empty() {
                item.push_str(&base36(done));
                item.push('.');
            }
            item.push_str(&base36(pending));
            if body.len() + item.len() + 1 > METADATA_BUDGET - 48 {
                // Out of room: from here on nothing counts as done.
                upto = a;
                break;
            }
            if !body.is_empty() {
                body.push('.');
            }
            body.push_str(&item);
            runs.push(pending);
            at = b + 1;
        }
        (
            format!("{METADATA_TAG};{};{body}", base36(upto - base)),
            upto,
        )
    }

    /// One bit per record from the committable offset (set: not done), six to a character.
    fn bitmap_metadata(&self) -> (String, i64) {
        let base = self.committable();
        let room = (METADATA_BUDGET - 48) as i64 * 6;
        let upto = self.next.min(base + room);
        let len = (upto - base).max(0) as usize;
        let mut bits = vec![0u8; len.div_ceil(6)];
        for &o in self.pending.range(base..upto) {
            let i = (o - base) as usize;
            bits[i / 6] |= 1 << (i % 6);
        }
        let body: String = bits
            .iter()
            .map(|b| BITMAP_DIGITS[*b as usize] as char)
            .collect();
        (
            format!("{METADATA_TAG};b{};{body}", base36(upto - base)),
            upto,
        )
    }

    fn committable(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_waits_for_the_lowest_pending_offset() {
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.begin(0, o);
        }
        assert_eq!(t.finish(0, 12), Some(10));
        assert_eq!(t.finish(0, 10), Some(11));
        assert_eq!(t.finish(0, 11), Some(13));
        assert_eq!(t.finish(0, 13), Some(14));
        assert_eq!(t.pending(), 0);
        assert_eq!(t.finish(1, 0), None);
    }

    #[test]
    fn metadata_names_what_is_not_done_and_the_next_owner_skips_the_rest() {
        let mut t = OffsetTracker::default();
        for o in 100..120 {
            t.begin(0, o);
        }
        for o in [100, 101, 103, 104, 105, 110, 119] {
            t.finish(0, o);
        }
        // Committable is 102; not done past it: 102, 106-109, 111-118.
        let meta = t.commit_metadata(0);
        let f = DoneFilter::parse(102, &meta).expect("ours");
        let done: Vec<i64> = (95..125).filter(|o| f.done(*o)).collect();
        assert_eq!(done, [103, 104, 105, 110, 119]);
        assert!(f.passed(120) && !f.passed(119));
        assert_eq!(DoneFilter::parse(102, "someone else's"), None);
        assert_eq!(DoneFilter::parse(102, ""), None);
    }

    #[test]
    fn both_forms_say_exactly_what_is_not_done() {
        // A few long runs (run lengths) and a fine interleaving (bitmap), each read back.
        for pattern in [|o: i64| (o / 500) % 2 == 0, |o: i64| o % 3 == 0] {
            let mut t = OffsetTracker::default();
            for o in 0..5_000 {
                t.begin(0, o);
                if !pattern(o) || o == 0 {
                    continue;
                }
                t.finish(0, o);
            }
            let base = t.committable()[0].1;
            let f = DoneFilter::parse(base, &t.commit_metadata(0)).unwrap();
            for o in base..5_000 {
                let done = o != 0 && pattern(o);
                assert_eq!(f.done(o), done && !f.passed(o), "offset {o}");
            }
            assert!(f.passed(5_000));
        }
    }

    #[test]
    fn a_tracker_resumed_from_metadata_knows_what_its_writer_knew() {
        let mut t = OffsetTracker::default();
        for o in 50..70 {
            t.begin(3, o);
            if o % 4 != 0 {
                t.finish(3, o);
            }
        }
        let base = t.committable_of(3).unwrap();
        assert_eq!(base, 52);
        let f = DoneFilter::parse(base, &t.commit_metadata(3)).unwrap();
        let mut resumed = OffsetTracker::default();
        resumed.resume(3, &f);
        assert_eq!(resumed.committable_of(3), Some(base));
        for o in base..75 {
            assert_eq!(resumed.is_done(3, o), t.is_done(3, o), "offset {o}");
        }
        assert_eq!(resumed.commit_metadata(3), t.commit_metadata(3));
        assert!(
            !resumed.is_done(4, 0),
            "a partition never begun knows nothing"
        );
    }

    #[test]
    fn metadata_past_its_budget_counts_nothing_beyond_as_done() {
        let mut t = OffsetTracker::default();
        for o in 0..20_000 {
            t.begin(0, o);
            if o % 2 == 1 {
                t.finish(0, o);
            }
        }
        let meta = t.commit_metadata(0);
        assert!(meta.len() <= METADATA_BUDGET, "{}", meta.len());
        let f = DoneFilter::parse(0, &meta).unwrap();
        // Every odd offset below the cut is done, nothing at or after it.
        let cut = (0..20_000).find(|o| f.passed(*o)).unwrap();
        // Interleaved: the bitmap form, six records a byte.
        assert!(cut > 15_000 && cut < 20_000, "{cut}");
        assert!((0..cut).all(|o| f.done(o) == (o % 2 == 1)));
        assert!((cut..20_000).all(|o| !f.done(o)));
    }
}
