//! Which records of one lane partition each subscription being read back still wants: the
//! reader's bookkeeping, without I/O.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

struct SubRead {
    generation: u64,
    /// The next offset of this subscription to hand over.
    next: i64,
    permits: Arc<Semaphore>,
    stalled: bool,
}

#[derive(Default)]
pub struct Cursors {
    subs: HashMap<String, SubRead>,
}

impl Cursors {
    /// Reads `sub`'s records from `cursor` on, at most `permits` handed over and unfinished.
    pub fn read(&mut self, sub: String, cursor: i64, generation: u64, permits: usize) {
        self.subs.insert(
            sub,
            SubRead {
                generation,
                next: cursor,
                permits: Arc::new(Semaphore::new(permits)),
                stalled: false,
            },
        );
    }

    pub fn stop(&mut self, sub: &str) {
        self.subs.remove(sub);
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Where reading must (re)start so that every subscription gets what it wants.
    pub fn lowest_wanted(&self) -> Option<i64> {
        self.subs.values().map(|s| s.next).min()
    }

    /// A record of `sub` at `offset`: `Some((generation, permit))` when it is to be handed
    /// over; `None` when not wanted (another subscription's reading, before the cursor,
    /// handed over already) or when `sub` is out of room, which stalls it until
    /// [`Cursors::resume_stalled`].
    pub fn take(&mut self, sub: &str, offset: i64) -> Option<(u64, OwnedSemaphorePermit)> {
        let read = self.subs.get_mut(sub)?;
        if offset < read.next || read.stalled {
            return None;
        }
        let Ok(permit) = read.permits.clone().try_acquire_owned() else {
            read.stalled = true;
            return None;
        };
        read.next = offset + 1;
        Some((read.generation, permit))
    }

    /// Stalled subscriptions that have room again take up reading where they stalled: the
    /// lowest such offset, to go back to.
    pub fn resume_stalled(&mut self) -> Option<i64> {
        self.subs
            .values_mut()
            .filter(|s| s.stalled && s.permits.available_permits() > 0)
            .map(|s| {
                s.stalled = false;
                s.next
            })
            .min()
    }

    /// The end of the partition was reached at `next`, reading from `from`: the
    /// subscriptions (and their generations) that have been handed everything before `next`.
    /// One that stalled, or whose reading starts below `from`, has not.
    pub fn caught_up(&mut self, next: i64, from: i64) -> Vec<(String, u64)> {
        self.subs
            .iter_mut()
            .filter(|(_, r)| !r.stalled && r.next >= from)
            .map(|(sub, r)| {
                r.next = r.next.max(next);
                (sub.clone(), r.generation)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subscription_gets_its_records_once_from_its_cursor() {
        let mut c = Cursors::default();
        c.read("a".into(), 10, 1, 100);
        c.read("b".into(), 5, 7, 100);
        assert_eq!(c.lowest_wanted(), Some(5));
        assert!(c.take("a", 9).is_none(), "before a's cursor");
        assert_eq!(c.take("b", 5).map(|(g, _)| g), Some(7));
        assert!(c.take("b", 5).is_none(), "handed over once");
        assert!(c.take("a", 10).is_some());
        assert!(c.take("x", 11).is_none(), "not being read");
        assert_eq!(c.lowest_wanted(), Some(6));
        c.stop("b");
        assert_eq!(c.lowest_wanted(), Some(11));
    }

    #[test]
    fn out_of_room_stalls_one_subscription_not_the_others() {
        let mut c = Cursors::default();
        c.read("slow".into(), 0, 1, 2);
        c.read("other".into(), 0, 1, 100);
        let p0 = c.take("slow", 0).unwrap().1;
        let _p1 = c.take("slow", 1).unwrap().1;
        assert!(c.take("slow", 2).is_none(), "two permits only");
        assert!(c.take("other", 3).is_some(), "others go on");
        assert!(c.take("slow", 4).is_none(), "stalled: skips its records");
        assert_eq!(c.resume_stalled(), None, "still no room");
        drop(p0);
        assert_eq!(c.resume_stalled(), Some(2), "back to where it stalled");
        assert!(c.take("slow", 2).is_some());
    }

    #[test]
    fn caught_up_only_for_complete_readings() {
        let mut c = Cursors::default();
        c.read("a".into(), 10, 1, 1);
        c.read("b".into(), 3, 2, 100);
        let _held = c.take("a", 10).unwrap();
        assert!(c.take("a", 12).is_none(), "a stalls");
        // Reading started at 5: b wants records from 3, so b is not complete either.
        assert!(c.caught_up(20, 5).is_empty());
        // Reading from 3: b is complete; a stalled and is not.
        assert_eq!(c.caught_up(20, 3), vec![("b".to_owned(), 2)]);
        assert_eq!(c.lowest_wanted(), Some(11));
    }
}
