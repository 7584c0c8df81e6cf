//! The retry policy of [`KmsClient`](crate::KmsClient) calls: which failures are retried
//! (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`), for which calls (idempotent ones
//! only: reads, wrap, unwrap, rewrap), and how long to wait between attempts (exponential
//! backoff with full jitter, at least the server's `RetryInfo` delay), within a total budget.

use std::time::Duration;

use tonic::Code;

use crate::error::ClientError;

/// Whether a call may be sent again after a failure that may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Sending it twice has the effect of sending it once (reads, wrap, unwrap, rewrap).
    Idempotent,
    /// A second send could act twice (create, rotate, delete ...): never retried.
    NotIdempotent,
}

/// When and how often failed idempotent calls are retried.
///
/// The delay before retry `n` (1-based) is drawn uniformly from
/// `[0, min(max_backoff, initial_backoff * multiplier^(n-1))]` ("full jitter"), raised to the
/// server's `RetryInfo` delay when it sent one. No retry starts if its delay would end after
/// `budget` counted from the first attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// The ceiling of the first backoff.
    pub initial_backoff: Duration,
    /// The largest backoff.
    pub max_backoff: Duration,
    /// The growth of the backoff ceiling per attempt.
    pub multiplier: f64,
    /// The total time allowed for all attempts and the waits between them.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff from 50 ms doubling up to 2 s, within 20 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            budget: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    #[must_use]
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// True when `error` is a transient failure worth another attempt.
    pub fn is_retryable(error: &ClientError) -> bool {
        matches!(
            error.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
        )
    }

    /// The ceiling of the backoff before retry `retry` (1-based).
    fn ceiling(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        Duration::from_secs_f64(grown.min(self.max_backoff.as_secs_f64()).max(0.0))
    }

    /// The wait before retry `retry` (1-based) after `error`, with `jitter` in `[0, 1]`:
    /// `None` when the call must not be retried (`elapsed` is the time since the first
    /// attempt started).
    pub(crate) fn delay(
        &self,
        idempotency: Idempotency,
        error: &ClientError,
        retry: u32,
        elapsed: Duration,
        jitter: f64,
    ) -> Option<Duration> {
        if idempotency == Idempotency::NotIdempotent
            || retry >= self.max_attempts
            || !Self::is_retryable(error)
        {
            return None;
        }
        let backoff = self.ceiling(retry).mul_f64(jitter.clamp(0.0, 1.0));
        let delay = error.retry_delay().map_or(backoff, |d| d.max(backoff));
        (elapsed + delay < self.budget).then_some(delay)
    }
}

/// A uniform draw from `[0, 1]` for the jitter (from the OS generator; without it, no jitter:
/// the full backoff is used).
pub(crate) fn jitter() -> f64 {
    getrandom::u32().map_or(1.0, |n| f64::from(n) / f64::from(u32::MAX))
}

/// Sends one unary RPC through [`KmsClient::call`](crate::KmsClient): `rpc!(client,
/// Idempotent, service_expr, method, request)` evaluates `service_expr` (a generated client)
/// for each attempt and sends a clone of `request`.
macro_rules! rpc {
    ($client:expr, $idempotency:ident, $service:expr, $method:ident, $request:expr) => {{
        let request = $request;
        $client
            .call($crate::retry::Idempotency::$idempotency, || {
                let mut service = $service;
                let request = request.clone();
                async move { service.$method(request).await }
            })
            .await
    }};
}
pub(crate) use rpc;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code) -> ClientError {
        ClientError::from(tonic::Status::new(code, "x"))
    }

    #[test]
    fn only_transient_codes_of_idempotent_calls_are_retried() {
        let p = RetryPolicy::default();
        let zero = Duration::ZERO;
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            assert!(
                p.delay(Idempotency::Idempotent, &status(code), 1, zero, 1.0)
                    .is_some()
            );
            assert!(
                p.delay(Idempotency::NotIdempotent, &status(code), 1, zero, 1.0)
                    .is_none()
            );
        }
        for code in [Code::Internal, Code::NotFound, Code::InvalidArgument] {
            assert!(
                p.delay(Idempotency::Idempotent, &status(code), 1, zero, 1.0)
                    .is_none()
            );
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        let e = status(Code::Unavailable);
        let d = |retry, jitter| {
            p.delay(Idempotency::Idempotent, &e, retry, Duration::ZERO, jitter)
                .unwrap()
        };
        assert_eq!(d(1, 1.0), Duration::from_millis(50));
        assert_eq!(d(2, 1.0), Duration::from_millis(100));
        assert_eq!(d(3, 0.5), Duration::from_millis(100));
        assert_eq!(d(1, 0.0), Duration::ZERO);
        let long = RetryPolicy {
            max_attempts: 100,
            ..RetryPolicy::default()
        };
        assert_eq!(
            long.delay(Idempotency::Idempotent, &e, 40, Duration::ZERO, 1.0),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn attempts_and_budget_are_limits() {
        let p = RetryPolicy::default();
        let e = status(Code::Unavailable);
        assert!(
            p.delay(Idempotency::Idempotent, &e, 5, Duration::ZERO, 1.0)
                .is_none()
        );
        assert!(
            p.delay(Idempotency::Idempotent, &e, 1, Duration::from_secs(20), 1.0)
                .is_none()
        );
        assert!(
            RetryPolicy::none()
                .delay(Idempotency::Idempotent, &e, 1, Duration::ZERO, 1.0)
                .is_none()
        );
    }

    #[test]
    fn the_servers_retry_delay_is_honoured() {
        let mut details = tonic_types::ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_secs(3)));
        let e = ClientError::from(
            <tonic::Status as tonic_types::StatusExt>::with_error_details(
                Code::ResourceExhausted,
                "slow down",
                details,
            ),
        );
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(Idempotency::Idempotent, &e, 1, Duration::ZERO, 0.1),
            Some(Duration::from_secs(3))
        );
        // A delay beyond the budget is not waited for.
        assert!(
            p.delay(Idempotency::Idempotent, &e, 1, Duration::from_secs(18), 0.1)
                .is_none()
        );
    }
}
