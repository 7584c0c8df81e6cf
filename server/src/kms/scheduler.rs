//! Every timer of the service, ordered by deadline. A timer is a hint that something may
//! change at that time ([`TimerSubject`]: a key's effective state, a key's soft-deleted
//! registrations, a lifecycle event's acknowledgement deadline); firing it re-evaluates the
//! subject (so stale timers are harmless), and the rules themselves live with the subject
//! (`records`, `registrations`, `lifecycle`).

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::kms::ids::KeyId;
use crate::kms::lock;

/// What a timer re-evaluates when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerSubject {
    /// A key's effective state (expiry, purge).
    Key(KeyId),
    /// A key's soft-deleted registrations (removal after `retain_for`).
    Registrations(KeyId),
    /// A lifecycle event's acknowledgement deadline, by sequence number.
    LifecycleAck(u64),
}

impl From<KeyId> for TimerSubject {
    fn from(key: KeyId) -> Self {
        TimerSubject::Key(key)
    }
}

/// Pending deadlines.
#[derive(Debug, Default)]
pub struct Scheduler {
    timers: Mutex<BTreeSet<(Timestamp, TimerSubject)>>,
}

impl Scheduler {
    /// Asks for `subject` (a [`KeyId`] for a key) to be re-evaluated at `at`.
    pub fn schedule(&self, at: Timestamp, subject: impl Into<TimerSubject>) {
        lock(&self.timers).insert((at, subject.into()));
    }

    /// Removes and returns every subject whose deadline is at or before `now`, in time order.
    pub fn take_due(&self, now: Timestamp) -> Vec<TimerSubject> {
        let mut timers = lock(&self.timers);
        let mut due = Vec::new();
        while let Some(&(at, key)) = timers.first() {
            if at > now {
                break;
            }
            timers.pop_first();
            due.push(key);
        }
        due
    }

    /// Drops every timer (reset).
    pub fn clear(&self) {
        lock(&self.timers).clear();
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Timestamp> {
        lock(&self.timers).first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_time_order_and_only_when_due() {
        let scheduler = Scheduler::default();
        let (a, b) = (KeyId::from_bytes([1; 16]), KeyId::from_bytes([2; 16]));
        scheduler.schedule(Timestamp::from_millis(200), a);
        scheduler.schedule(Timestamp::from_millis(100), b);
        assert!(scheduler.take_due(Timestamp::from_millis(50)).is_empty());
        assert_eq!(scheduler.next(), Some(Timestamp::from_millis(100)));
        assert_eq!(
            scheduler.take_due(Timestamp::from_millis(500)),
            vec![TimerSubject::Key(b), TimerSubject::Key(a)]
        );
        assert_eq!(scheduler.next(), None);
    }
}
