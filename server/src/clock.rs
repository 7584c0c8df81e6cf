//! Time: the one place the server reads it. Every time-dependent rule (rotation cool-down,
//! enable guard, purge and restore windows, expiration, import-token expiry) asks a
//! [`Clock`], which is either the system clock or a [`SimulatedClock`] that moves only when
//! told.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Converts a system time (saturating at the epoch and at `i64::MAX` ms).
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(elapsed) => Self(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)),
            Err(_) => Self(0),
        }
    }

    /// This instant plus `duration` (saturating).
    pub fn plus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// How long from `self` until `later`; zero when `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        let millis = later.0.saturating_sub(self.0);
        Duration::from_millis(u64::try_from(millis).unwrap_or(0))
    }

    /// Parses an RFC 3339 date and time (`2026-01-01T00:00:00Z`, fractional seconds allowed).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        humantime::parse_rfc3339(text.trim())
            .ok()
            .map(Self::from_system_time)
    }

    /// As a protobuf timestamp.
    pub fn to_proto(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.0.div_euclid(1000),
            // The remainder is in 0..1000, so the product fits in i32.
            nanos: i32::try_from(self.0.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }
    }

    /// From a protobuf timestamp; `None` when it is out of the representable range.
    pub fn from_proto(ts: &prost_types::Timestamp) -> Option<Self> {
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return None;
        }
        let millis = ts
            .seconds
            .checked_mul(1000)?
            .checked_add(i64::from(ts.nanos / 1_000_000))?;
        Some(Self(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0));
        write!(f, "{}", humantime::format_rfc3339_millis(time))
    }
}

/// The source of "now" for every rule of the service.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A receiver that changes whenever the clock jumps (a simulated clock being advanced or
    /// set), so the scheduler can fire due timers at once. `None` for the system clock.
    fn jumps(&self) -> Option<watch::Receiver<Timestamp>> {
        None
    }

    /// The simulated clock, when this is one (the simulator's clock controls move only it).
    fn simulated(&self) -> Option<&SimulatedClock> {
        None
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A clock that stands still until it is advanced or set.
#[derive(Debug)]
pub struct SimulatedClock {
    now: AtomicI64,
    jumps: watch::Sender<Timestamp>,
}

/// Why a simulated clock refused to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// Time may only move forward: timers that already fired cannot be undone.
    #[error("a simulated clock cannot move backwards")]
    Backwards,
}

impl SimulatedClock {
    /// A clock frozen at `start`.
    pub fn new(start: Timestamp) -> Self {
        let (jumps, _) = watch::channel(start);
        Self {
            now: AtomicI64::new(start.as_millis()),
            jumps,
        }
    }

    /// A clock frozen at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward by `by` and returns the new time.
    pub fn advance(&self, by: Duration) -> Timestamp {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let previous = self.now.fetch_add(millis, Ordering::SeqCst);
        let now = Timestamp(previous.saturating_add(millis));
        self.jumps.send_replace(now);
        now
    }

    /// Sets the clock to `to`, which must not be earlier than now.
    pub fn set(&self, to: Timestamp) -> Result<Timestamp, ClockError> {
        self.now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                (to.as_millis() >= current).then_some(to.as_millis())
            })
            .map_err(|_| ClockError::Backwards)?;
        self.jumps.send_replace(to);
        Ok(to)
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }

    fn jumps(&self) -> Option<watch::Receiver<Timestamp>> {
        Some(self.jumps.subscribe())
    }

    fn simulated(&self) -> Option<&SimulatedClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_moves_only_when_told() {
        let clock = SimulatedClock::new(Timestamp::from_millis(1_000));
        assert_eq!(clock.now(), Timestamp::from_millis(1_000));
        clock.advance(Duration::from_secs(4 * 3600));
        assert_eq!(clock.now(), Timestamp::from_millis(1_000 + 4 * 3600 * 1000));
        assert_eq!(
            clock.set(Timestamp::from_millis(5)),
            Err(ClockError::Backwards)
        );
        assert!(
            clock
                .set(Timestamp::from_millis(i64::from(u32::MAX)))
                .is_ok()
        );
    }

    #[test]
    fn proto_round_trip_keeps_milliseconds() {
        let ts = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(Timestamp::from_proto(&ts.to_proto()), Some(ts));
        let before_epoch = Timestamp::from_millis(-1);
        assert_eq!(
            Timestamp::from_proto(&before_epoch.to_proto()),
            Some(before_epoch)
        );
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -5,
        };
        assert_eq!(Timestamp::from_proto(&bad), None);
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(
            Timestamp::parse_rfc3339("2026-01-01T00:00:00Z"),
            Some(Timestamp::from_millis(1_767_225_600_000))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn until_is_zero_for_the_past() {
        let a = Timestamp::from_millis(10_000);
        assert_eq!(a.until(Timestamp::from_millis(5_000)), Duration::ZERO);
        assert_eq!(
            a.until(Timestamp::from_millis(12_000)),
            Duration::from_secs(2)
        );
    }
}
