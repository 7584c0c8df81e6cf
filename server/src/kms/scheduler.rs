//! Every timer of the service, ordered by deadline. A timer is a hint that a key's effective
//! state may change at that time; firing it re-evaluates the key (so stale timers are
//! harmless), and the rules themselves live in `records`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::kms::ids::KeyId;
use crate::kms::lock;

/// Pending deadlines.
#[derive(Debug, Default)]
pub struct Scheduler {
    timers: Mutex<BTreeSet<(Timestamp, KeyId)>>,
}

impl Scheduler {
    /// Asks for `key` to be re-evaluated at `at`.
    pub fn schedule(&self, at: Timestamp, key: KeyId) {
        lock(&self.timers).insert((at, key));
    }

    /// Removes and returns every key whose deadline is at or before `now`, in time order.
    pub fn take_due(&self, now: Timestamp) -> Vec<KeyId> {
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
        assert_eq!(scheduler.take_due(Timestamp::from_millis(500)), vec![b, a]);
        assert_eq!(scheduler.next(), None);
    }
}
