//! The FIFO queue of reservations waiting for a device (sans-IO: deadlines are compared with a given `now`).

use std::collections::VecDeque;

use crate::domain::{Millis, Target};

/// One queued reservation; `payload` carries whatever the shell needs to answer it.
#[derive(Debug)]
pub struct Waiter<T> {
    pub target: Target,
    pub deadline: Millis,
    pub payload: T,
}

/// First come, first served: `take_first` always looks at the oldest waiter first.
#[derive(Debug)]
pub struct WaitQueue<T> {
    waiters: VecDeque<Waiter<T>>,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue {
            waiters: VecDeque::new(),
        }
    }
}

impl<T> WaitQueue<T> {
    pub fn push(&mut self, waiter: Waiter<T>) {
        self.waiters.push_back(waiter);
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Removes and returns the waiters whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Millis) -> Vec<Waiter<T>> {
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.waiters.drain(..).partition(|w| w.deadline <= now);
        self.waiters = kept.into();
        expired
    }

    /// Drops the waiters `keep` rejects (e.g. whose client has gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&Waiter<T>) -> bool) {
        self.waiters.retain(|w| keep(w));
    }

    /// Removes the oldest waiter for which `pick` finds something, with what it found.
    pub fn take_first<R>(
        &mut self,
        mut pick: impl FnMut(&Waiter<T>) -> Option<R>,
    ) -> Option<(Waiter<T>, R)> {
        let (index, found) = self
            .waiters
            .iter()
            .enumerate()
            .find_map(|(i, w)| pick(w).map(|r| (i, r)))?;
        self.waiters.remove(index).map(|w| (w, found))
    }

    /// The earliest deadline, for the shell's timer.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.waiters.iter().map(|w| w.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(device: &str, deadline: Millis, id: u32) -> Waiter<u32> {
        Waiter {
            target: Target::Device(device.into()),
            deadline,
            payload: id,
        }
    }

    #[test]
    fn oldest_matching_waiter_goes_first() {
        let mut q = WaitQueue::default();
        q.push(waiter("a", 100, 1));
        q.push(waiter("b", 100, 2));
        q.push(waiter("a", 100, 3));
        let pick_a = |w: &Waiter<u32>| (w.target == Target::Device("a".into())).then_some(());
        assert_eq!(q.take_first(pick_a).map(|(w, _)| w.payload), Some(1));
        assert_eq!(q.take_first(pick_a).map(|(w, _)| w.payload), Some(3));
        assert!(q.take_first(pick_a).is_none());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn expiry_takes_only_past_deadlines_and_keeps_order() {
        let mut q = WaitQueue::default();
        q.push(waiter("a", 50, 1));
        q.push(waiter("a", 200, 2));
        q.push(waiter("a", 100, 3));
        assert_eq!(q.next_deadline(), Some(50));
        let expired: Vec<u32> = q.take_expired(100).into_iter().map(|w| w.payload).collect();
        assert_eq!(expired, vec![1, 3]);
        assert_eq!(q.next_deadline(), Some(200));
        assert_eq!(q.take_first(|_| Some(())).map(|(w, _)| w.payload), Some(2));
        assert!(q.is_empty());
    }
}
