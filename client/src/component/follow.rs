//! [`DeploymentKey::follow`]: the deployment follows its root key through the key's lifecycle
//! events, resuming after the last event it saved, reconnecting with backoff when the stream
//! breaks; and [`DeploymentKey::apply`], one event: rotate -> rewrap under the new version, save,
//! move the registration forward; disable -> lock; delete -> zeroize and lock; enable and
//! restore -> unwrap again; then acknowledge with the state the deployment is really in, and
//! save the event's sequence number.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{AccessState, ComponentError, DeploymentKey, KeyProtection, refused_access};
use crate::datakey::WrappedDataKey;
use crate::proto::{KeyState, LifecycleEvent, LifecycleEventKind};
use crate::{ClientError, Reason};

/// The first wait before reconnecting a broken stream.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait before the next reconnection: up to `ceiling`, jittered.
fn jittered(ceiling: Duration) -> Duration {
    let draw = getrandom::u32().map_or(1.0, |n| f64::from(n) / f64::from(u32::MAX));
    ceiling.mul_f64(0.5 + draw / 2.0)
}

/// Told about each lifecycle event [`DeploymentKey::follow_observed`] applies.
pub trait FollowObserver: Send + Sync {
    /// The event is about to be applied (for a rotation: re-encryption starts).
    fn started(&self, event: &LifecycleEvent);
    /// The event was applied, acknowledged and saved; the deployment is now `access`.
    fn finished(&self, event: &LifecycleEvent, access: AccessState);
}

struct NoObserver;

impl FollowObserver for NoObserver {
    fn started(&self, _: &LifecycleEvent) {}
    fn finished(&self, _: &LifecycleEvent, _: AccessState) {}
}

impl DeploymentKey {
    /// Follows the root key until `shutdown` completes: watches the deployment's lifecycle
    /// events after the last sequence number saved and [`apply`](Self::apply)s each. When the
    /// stream breaks, or an event cannot be applied yet, reconnects after an exponential,
    /// jittered backoff (50 ms up to 5 s) and resumes after the last event saved, so no event
    /// is lost or applied twice. Returns at once for a local key.
    pub async fn follow(&self, shutdown: impl Future<Output = ()>) {
        self.follow_observed(shutdown, &NoObserver).await;
    }

    /// As [`follow`](Self::follow), telling `observer` when each event starts and finishes
    /// being applied (for a deployment's task list).
    pub async fn follow_observed(
        &self,
        shutdown: impl Future<Output = ()>,
        observer: &dyn FollowObserver,
    ) {
        if self.state().protection == KeyProtection::Local {
            return;
        }
        tokio::pin!(shutdown);
        let mut backoff = INITIAL_BACKOFF;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = self.follow_once(&mut backoff, observer) => {}
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(jittered(backoff)) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One stream: open it, apply its events until it ends or fails.
    async fn follow_once(
        &self,
        backoff: &mut Duration,
        observer: &dyn FollowObserver,
    ) -> Result<(), ComponentError> {
        let state = self.state();
        let mut stream = self
            .client
            .watch_lifecycle_events(&state.deployment_crn, state.last_sequence)
            .await?;
        *backoff = INITIAL_BACKOFF;
        while let Some(event) = stream.message().await.map_err(ClientError::from)? {
            if event.sequence <= self.state().last_sequence {
                continue;
            }
            observer.started(&event);
            self.apply(&event).await?;
            observer.finished(&event, self.access());
        }
        Ok(())
    }

    /// Applies one lifecycle event (an event at or before the last one saved is skipped), then
    /// acknowledges it with the state the deployment is in and saves its sequence number.
    ///
    /// # Errors
    /// [`ComponentError::Kms`] or [`ComponentError::Store`]: the event is not saved as
    /// applied, and applying it again later is safe.
    pub async fn apply(&self, event: &LifecycleEvent) -> Result<(), ComponentError> {
        let _one_at_a_time = self.applying.lock().await;
        if event.sequence <= self.state().last_sequence {
            return Ok(());
        }
        let Some((key, _)) = self.root()? else {
            return Ok(());
        };
        match KeyState::try_from(event.key_state).unwrap_or(KeyState::Unspecified) {
            KeyState::Active => {
                if self.access() != AccessState::Open {
                    // The key may have changed again since the event: `verify` locks
                    // as the key now says, and the next event tells the rest.
                    self.verify().await?;
                }
                let rotated = event.kind == LifecycleEventKind::Rotate as i32;
                if self.access() == AccessState::Open
                    && (rotated || self.key_version().as_deref() != Some(&event.new_key_version_id))
                {
                    match self.follow_rotation(&key).await {
                        Ok(()) => {}
                        // An old event: the key has been disabled or deleted since, so the
                        // deployment locks and says so; the later event tells it the rest.
                        Err(ComponentError::Kms(e)) if refused_access(&e).is_some() => {
                            self.zeroize();
                            self.set_access(refused_access(&e).unwrap_or(AccessState::Suspended))?;
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
            KeyState::Suspended | KeyState::Deactivated => {
                self.zeroize();
                self.set_access(AccessState::Suspended)?;
            }
            KeyState::Destroyed => {
                self.zeroize();
                self.set_access(AccessState::Shredded)?;
            }
            _ => {}
        }
        let really = match self.access() {
            AccessState::Open => KeyState::Active,
            AccessState::Suspended => KeyState::Suspended,
            AccessState::Shredded => KeyState::Destroyed,
        };
        let version = self.key_version();
        match self
            .client
            .ack_lifecycle_event(&event.event_id, really, version.as_deref())
            .await
        {
            Ok(_) => {}
            // Acknowledged before this process last saved (for example just before a crash).
            Err(e) if e.reason() == Some(Reason::LifecycleEventSettled) => {}
            Err(e) => return Err(e.into()),
        }
        self.update(|s| s.last_sequence = event.sequence)?;
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// After a rotation: rewraps the data key, saves it, and moves the registration to the
    /// version now in use.
    async fn follow_rotation(&self, key: &crate::KeyRef) -> Result<(), ComponentError> {
        self.rewrap().await?;
        let deployment_crn = self.state().deployment_crn;
        let version = self.key_version().unwrap_or_default();
        self.client
            .set_registration_key_version(key, &deployment_crn, &version)
            .await?;
        Ok(())
    }

    /// Rewraps the data key under the root key's current version (the plaintext stays in the
    /// KMS) and saves it, when that version differs from the one saved.
    async fn rewrap(&self) -> Result<(), ComponentError> {
        let Some((key, wrapped)) = self.root()? else {
            return Ok(());
        };
        let deployment_crn = self.state().deployment_crn;
        let rewrapped = self
            .client
            .rewrap(&key, &wrapped.ciphertext, &[deployment_crn.as_str()])
            .await?;
        let new = WrappedDataKey {
            ciphertext: rewrapped.ciphertext,
            key_version_id: rewrapped.current_version.id,
        };
        if new.key_version_id.is_empty() || new.key_version_id == wrapped.key_version_id {
            return Ok(());
        }
        self.update(|s| {
            if let KeyProtection::RootKey { wrapped, .. } = &mut s.protection {
                *wrapped = new;
            }
        })
    }
}
