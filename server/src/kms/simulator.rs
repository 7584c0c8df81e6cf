//! The simulator's own controls: moving a simulated clock (persisted, so a restart never
//! goes back in time, and firing every timer that falls due before returning) and
//! resetting the whole state.
//!
//! Each administration call is one `Kms` method, so the permission check that
//! authentication will add sits at the top of each.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SimulatedClock, Timestamp};
use crate::error::KmsError;
use crate::faults::{ActiveRule, FaultRule, Faults};
use crate::kms::{Kms, lock, write};
use crate::store::{Change, Tree};

/// The store key (in [`Tree::Simulator`]) of the simulated clock's last time.
const CLOCK_KEY: &[u8] = b"clock";

/// The outcome of moving the simulated clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockMove {
    /// The new current time.
    pub now: Timestamp,
    /// How many keys changed because a timer fired.
    pub timers_fired: usize,
}

/// What `GetTime` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// The current time.
    pub now: Timestamp,
    /// Whether the clock is simulated.
    pub simulated: bool,
}

/// What a reset removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetSummary {
    /// Instances removed.
    pub instances: usize,
    /// Keys removed.
    pub keys: usize,
}

impl Kms {
    /// The current time and whether the server runs a simulated clock (`GetTime`).
    pub fn clock_reading(&self) -> ClockReading {
        ClockReading {
            now: self.now(),
            simulated: self.clock.simulated().is_some(),
        }
    }

    fn simulated_clock(&self) -> Result<&SimulatedClock, KmsError> {
        self.clock.simulated().ok_or(KmsError::ClockNotSimulated)
    }

    /// On start-up: moves a simulated clock forward to the time a previous run stored, when
    /// that is later than its configured start.
    pub(crate) fn restore_clock(&self) -> Result<(), KmsError> {
        let Some(clock) = self.clock.simulated() else {
            return Ok(());
        };
        if let Some(bytes) = self.store.get(Tree::Simulator, CLOCK_KEY)? {
            let millis: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                KmsError::Store(crate::store::StoreError::corrupt(
                    Tree::Simulator,
                    "the stored clock is not 8 bytes",
                ))
            })?;
            let stored = Timestamp::from_millis(i64::from_be_bytes(millis));
            if stored > clock.now() {
                // Only forward, which the comparison just checked.
                clock.set(stored).map_err(|_| KmsError::ClockBackwards)?;
            }
        }
        Ok(())
    }

    /// Advances the simulated clock by `by` (> 0, checked at the edge) and fires every timer
    /// that falls due before returning. `CLOCK_NOT_SIMULATED_ERR` under the system clock.
    pub fn advance_clock(&self, by: Duration) -> Result<ClockMove, KmsError> {
        let clock = self.simulated_clock()?;
        let _moving = lock(&self.clock_admin);
        self.move_clock(clock, clock.now().plus(by))
    }

    /// Sets the simulated clock to `to` (not earlier than now: `CLOCK_BACKWARDS_ERR`) and
    /// fires every timer that falls due before returning.
    pub fn set_time(&self, to: Timestamp) -> Result<ClockMove, KmsError> {
        let clock = self.simulated_clock()?;
        let _moving = lock(&self.clock_admin);
        if to < clock.now() {
            return Err(KmsError::ClockBackwards);
        }
        self.move_clock(clock, to)
    }

    /// Persists `to`, moves the clock there, then fires due timers. The caller holds
    /// `clock_admin` and checked that `to` is not in the past.
    fn move_clock(&self, clock: &SimulatedClock, to: Timestamp) -> Result<ClockMove, KmsError> {
        self.store.put(
            Tree::Simulator,
            CLOCK_KEY,
            to.as_millis().to_be_bytes().to_vec(),
        )?;
        // Hold `firing` across the move: the background timer task wakes on the jump and
        // must not fire (and count) this move's timers first.
        let _firing = lock(&self.firing);
        let now = clock.set(to).map_err(|_| KmsError::ClockBackwards)?;
        let timers_fired = self.fire_due_timers_locked()?;
        Ok(ClockMove { now, timers_fired })
    }

    /// Wipes all state: every instance, key, import token, registration and lifecycle event
    /// (records and index), every fault rule, every audit event, and every HSM token (the HSM
    /// is zeroized, its self-test failure injection cleared, its
    /// self-tests re-run, and the master key re-activated). The clock keeps its time.
    ///
    /// Calls running concurrently with a reset may fail; test suites reset between tests.
    pub fn reset(&self) -> Result<ResetSummary, KmsError> {
        let _admin = lock(&self.instance_admin);
        let _firing = lock(&self.firing);
        let summary = ResetSummary {
            instances: self.instances.len(),
            keys: self.keys.len(),
        };
        let mut changes = Vec::new();
        for tree in [
            Tree::Instances,
            Tree::Keys,
            Tree::ImportTokens,
            Tree::Registrations,
            Tree::LifecycleEvents,
        ] {
            for (key, _) in self.store.scan_prefix(tree, b"")? {
                changes.push(Change::Delete { tree, key });
            }
        }
        self.store.apply(changes)?;
        for instance in self.instances.values() {
            if let Some(keystore) = write(&instance.keystore).take() {
                keystore.close();
            }
        }
        self.instances.clear();
        self.keys.clear();
        self.key_order.clear();
        self.clear_registrations();
        self.clear_lifecycle();
        self.scheduler.clear();
        self.hsm.set_self_test_failure(None);
        self.hsm.reset();
        self.hsm.zeroize()?;
        self.hsm.activate_dev_master_key(&self.master_key())?;
        self.ensure_iam_signer()?;
        self.faults.clear(None);
        // The trail goes too; sequence numbers continue (see `audit::trail`).
        self.audit.wipe()?;
        Ok(summary)
    }

    /// The fault rules in force (the gRPC layer applies them).
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Adds a fault rule.
    pub fn inject_fault(&self, rule: FaultRule) -> ActiveRule {
        self.faults.inject(rule)
    }

    /// The fault rules in force, oldest first.
    pub fn list_faults(&self) -> Vec<ActiveRule> {
        self.faults.list()
    }

    /// Removes fault rule `id`, or all of them; returns how many were removed.
    pub fn clear_faults(&self, id: Option<&str>) -> usize {
        self.faults.clear(id)
    }
}
