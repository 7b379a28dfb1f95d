//! Seq maps: frame GUID -> lowest unflushed WAL seq. Used for the dirty
//! map and the pending-delete map (I1, I3 in `buffer`).
//!
//! A drain moves the live entries to an *in-flight* set in one step under
//! the map's mutex, so a mark that races with it lands in the fresh live
//! map. The round then either completes (in-flight cleared) or fails and
//! restores (in-flight merged back into live, keeping the minimum seq).
//! Eviction asks [`SeqMap::contains`], which covers both sets.
//!
//! This file is compiled against loom by `holt-loom-tests`.

use std::collections::HashMap;

use super::super::mutation;
use super::super::sync::{Mutex, MutexGuard};

type Guid = [u8; 16];

#[derive(Debug, Default)]
struct Maps {
    live: HashMap<Guid, u64>,
    in_flight: HashMap<Guid, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct SeqMap {
    maps: Mutex<Maps>,
}

fn merge_min(map: &mut HashMap<Guid, u64>, guid: Guid, seq: u64) {
    map.entry(guid)
        .and_modify(|s| *s = (*s).min(seq))
        .or_insert(seq);
}

impl SeqMap {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        match self.maps.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Records that `guid` holds changes from `seq` on (keeps the minimum).
    pub(crate) fn mark(&self, guid: Guid, seq: u64) {
        merge_min(&mut self.lock().live, guid, seq);
    }

    /// Moves every live entry in flight and returns a copy of them.
    pub(crate) fn drain(&self) -> HashMap<Guid, u64> {
        let mut m = self.lock();
        let live = std::mem::take(&mut m.live);
        for (&g, &s) in &live {
            merge_min(&mut m.in_flight, g, s);
        }
        live
    }

    /// The round that drained these entries wrote them: forget them.
    pub(crate) fn complete(&self, drained: &HashMap<Guid, u64>) {
        let mut m = self.lock();
        for g in drained.keys() {
            m.in_flight.remove(g);
        }
    }

    /// The round failed: put its entries back (I3: keep the minimum).
    pub(crate) fn restore(&self, drained: &HashMap<Guid, u64>) {
        let mut m = self.lock();
        for (&g, &s) in drained {
            m.in_flight.remove(&g);
            if mutation::DIRTY_RESTORE_OVERWRITES {
                m.live.insert(g, s);
            } else {
                merge_min(&mut m.live, g, s);
            }
        }
    }

    /// Drops `guid` from both sets, returning the lowest seq it had.
    pub(crate) fn remove(&self, guid: &Guid) -> Option<u64> {
        let mut m = self.lock();
        let a = m.live.remove(guid);
        let b = m.in_flight.remove(guid);
        match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// True if `guid` is live or in flight.
    pub(crate) fn contains(&self, guid: &Guid) -> bool {
        let m = self.lock();
        m.live.contains_key(guid) || m.in_flight.contains_key(guid)
    }

    /// The GUIDs of the live entries.
    pub(crate) fn live_guids(&self) -> Vec<Guid> {
        self.lock().live.keys().copied().collect()
    }

    /// Live entries (not counting in-flight ones).
    pub(crate) fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Lowest seq over live and in-flight entries (I2's floor; the WAL
    /// truncation of the persistence work reads it).
    #[allow(dead_code)]
    pub(crate) fn min_seq(&self) -> Option<u64> {
        let m = self.lock();
        m.live.values().chain(m.in_flight.values()).copied().min()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn mark_keeps_minimum() {
        let m = SeqMap::default();
        m.mark([1; 16], 9);
        m.mark([1; 16], 4);
        m.mark([1; 16], 7);
        assert_eq!(m.min_seq(), Some(4));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn drain_then_mark_lands_in_next_round_and_restore_keeps_minima() {
        let m = SeqMap::default();
        m.mark([1; 16], 5);
        m.mark([2; 16], 8);
        let d = m.drain();
        assert_eq!(d.len(), 2);
        assert_eq!(m.len(), 0);
        assert!(m.contains(&[1; 16]), "in-flight entries still count");
        m.mark([1; 16], 10); // races with the round
        m.restore(&d);
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove(&[1; 16]), Some(5));
        assert_eq!(m.remove(&[2; 16]), Some(8));
        assert!(!m.contains(&[1; 16]));
    }

    #[test]
    fn complete_forgets_in_flight_only() {
        let m = SeqMap::default();
        m.mark([1; 16], 1);
        let d = m.drain();
        m.mark([1; 16], 2);
        m.complete(&d);
        assert!(m.contains(&[1; 16]));
        assert_eq!(m.min_seq(), Some(2));
    }
}
