//! Offsets that are safe to commit while records finish out of order.
//!
//! Architecture Invariant: the committed offset of a partition never passes a record whose
//! work is not yet durable; it is the lowest offset still pending (or one past the highest
//! finished when nothing is pending).

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

    /// Forgets a partition that was revoked.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

impl Partition {
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
}
