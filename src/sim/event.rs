//! A time-ordered event queue. Ties are broken by insertion order, so two events at the same nanosecond are always
//! handled in the order they were scheduled, run after run.

use crate::units::Nanos;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug)]
struct Entry<E> {
    key: Reverse<(Nanos, u64)>,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    pub fn push(&mut self, time: Nanos, event: E) {
        self.heap.push(Entry {
            key: Reverse((time, self.seq)),
            event,
        });
        self.seq += 1;
    }

    pub fn peek_time(&self) -> Option<Nanos> {
        self.heap.peek().map(|e| e.key.0.0)
    }

    /// The earliest event if it is due at or before `now`.
    pub fn pop_due(&mut self, now: Nanos) -> Option<(Nanos, E)> {
        if self.peek_time()? > now {
            return None;
        }
        self.heap.pop().map(|e| (e.key.0.0, e.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_insertion() {
        let mut q = EventQueue::default();
        q.push(Nanos(5), "b");
        q.push(Nanos(1), "a");
        q.push(Nanos(5), "c");
        q.push(Nanos(5), "d");
        assert_eq!(q.pop_due(Nanos(0)), None);
        assert_eq!(q.pop_due(Nanos(9)), Some((Nanos(1), "a")));
        assert_eq!(q.pop_due(Nanos(9)).unwrap().1, "b");
        assert_eq!(q.pop_due(Nanos(9)).unwrap().1, "c");
        assert_eq!(q.pop_due(Nanos(9)).unwrap().1, "d");
        assert!(q.is_empty());
    }
}
