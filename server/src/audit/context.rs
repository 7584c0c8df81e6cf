//! The one typed context of a call: what the audit and fault layers need to know about it,
//! filled in by whoever learns it first and never recovered by re-reading the request body
//! or re-decoding an encoded status.
//!
//! The audit layer puts a [`CallContext`] into the request extensions (with the method);
//! the auth layer adds the caller; the fault layer marks injections and leaves the rules
//! that filter by instance or key to the edge; the edge names the call's [`Subject`] as soon
//! as it has parsed it (which applies those rules) and the target key's state and versions
//! after the domain call; the error mapping notes the typed [`Failure`] of a refused call.
//! Cloning shares the context; the fields sit behind a mutex of their own call, so no two
//! calls ever contend for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;

use super::ActionSpec;
use crate::auth::Identity;
use crate::faults::Faults;
use crate::kms::KeyView;
use crate::kms::ids::{Crn, InstanceId, KeyId, KeyName, KeyRef, ServiceName};
use crate::kms::lock;
use crate::kms::state::KeyState;

/// What a request names, as the edge parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A key (by CRN, id or alias).
    Key(KeyRef),
    /// An instance.
    Instance(InstanceId),
}

impl Subject {
    /// The instance the subject is in.
    pub fn instance(&self) -> InstanceId {
        match self {
            Self::Key(key) => key.instance(),
            Self::Instance(id) => *id,
        }
    }

    /// Whether the subject names `key` by its id (an alias names no id).
    pub fn names_key(&self, key: KeyId) -> bool {
        match self {
            Self::Key(KeyRef::Crn(crn)) => {
                matches!(crn.resource, crate::kms::ids::CrnResource::Key(id) if id == key)
            }
            Self::Key(KeyRef::Path {
                key: KeyName::Id(id),
                ..
            }) => *id == key,
            Self::Key(KeyRef::Path { .. }) | Self::Instance(_) => false,
        }
    }
}

/// How a call was refused, as the error mapping classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC code.
    pub code: Code,
    /// The Key Protect reason code.
    pub reason: &'static str,
    /// The HTTP status Key Protect answers.
    pub http_status: u16,
}

/// The fields of a [`CallContext`].
#[derive(Debug, Clone)]
pub struct CallFields {
    /// The method's audit spec.
    pub spec: ActionSpec,
    /// The gRPC method path.
    pub method: String,
    /// The authenticated caller.
    pub initiator: Option<Identity>,
    /// Whether a fault rule failed or delayed the call.
    pub injected: bool,
    /// Latency a fault rule added.
    pub injected_latency: Option<Duration>,
    /// What the request names, once the edge has parsed it.
    pub subject: Option<Subject>,
    /// The target's CRN, when the edge learned it from the domain.
    pub target_crn: Option<String>,
    /// The target's instance and the service it is served as.
    pub instance: Option<(InstanceId, ServiceName)>,
    /// The key's state after the call.
    pub key_state: Option<KeyState>,
    /// The key version used.
    pub key_version_id: Option<String>,
    /// The version rewrapped under.
    pub rewrapped_key_version_id: Option<String>,
    /// How the call was refused, as the error mapping classified it.
    pub failure: Option<Failure>,
    /// Fault rules that filter by instance or key, decided once the subject is known.
    deferred_faults: Option<Arc<Faults>>,
}

/// The typed context of one call (see the module documentation). Cloning shares it.
#[derive(Debug, Clone)]
pub struct CallContext(Arc<Mutex<CallFields>>);

tokio::task_local! {
    /// The context of the call the current task is serving (set by the audit layer around
    /// the inner services), for the error mapping.
    static CURRENT: CallContext;
}

/// Notes `failure` in the context of the call the current task serves, if any. The error
/// mapping calls it for every refusal it builds.
pub fn note_failure(failure: Failure) {
    let _ = CURRENT.try_with(|context| lock(&context.0).failure = Some(failure));
}

impl CallContext {
    /// A fresh context for a call to `method`.
    pub fn new(spec: ActionSpec, method: String) -> Self {
        Self(Arc::new(Mutex::new(CallFields {
            spec,
            method,
            initiator: None,
            injected: false,
            injected_latency: None,
            subject: None,
            target_crn: None,
            instance: None,
            key_state: None,
            key_version_id: None,
            rewrapped_key_version_id: None,
            failure: None,
            deferred_faults: None,
        })))
    }

    /// Runs `future` with this context as the current task's (see [`note_failure`]).
    pub async fn scope<F: std::future::Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Runs `call` with this context as the current task's (see [`note_failure`]).
    pub fn sync_scope<R>(&self, call: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), call)
    }

    /// Records the authenticated caller.
    pub fn set_initiator(&self, who: Identity) {
        lock(&self.0).initiator = Some(who);
    }

    /// Marks the call as failed or delayed (`latency`) by a fault rule.
    pub fn mark_injected(&self, latency: Option<Duration>) {
        let mut fields = lock(&self.0);
        fields.injected = true;
        fields.injected_latency = latency;
    }

    /// Leaves the fault rules that filter by instance or key to [`Self::name_subject`].
    pub fn defer_faults(&self, faults: Arc<Faults>) {
        lock(&self.0).deferred_faults = Some(faults);
    }

    /// Records what the request names; returns the fault rules left to decide for it (the
    /// edge applies them), at most once per call.
    pub fn name_subject(&self, subject: Subject) -> Option<(Arc<Faults>, String, Subject)> {
        let mut fields = lock(&self.0);
        fields.subject = Some(subject.clone());
        let faults = fields.deferred_faults.take()?;
        Some((faults, fields.method.clone(), subject))
    }

    /// Records the target key as `view` shows it after the call, with its current version.
    pub fn set_key(&self, view: &KeyView) {
        let mut fields = lock(&self.0);
        fields.target_crn = Some(view.crn.to_string());
        fields.instance = Some((view.record.instance, view.crn.service));
        fields.key_state = Some(view.state);
        if fields.key_version_id.is_none() {
            fields.key_version_id = view.record.current_version().map(|v| v.id.to_string());
        }
    }

    /// Records the target (a key's or an instance's CRN) when the request did not name it
    /// (e.g. the instance a `CreateInstance` made).
    pub fn set_target(&self, crn: &Crn) {
        let mut fields = lock(&self.0);
        fields.target_crn = Some(crn.to_string());
        fields.instance = Some((crn.instance, crn.service));
    }

    /// Records the key version the call used.
    pub fn set_key_version(&self, id: impl ToString) {
        lock(&self.0).key_version_id = Some(id.to_string());
    }

    /// Records the version the call rewrapped under.
    pub fn set_rewrapped_key_version(&self, id: impl ToString) {
        lock(&self.0).rewrapped_key_version_id = Some(id.to_string());
    }

    /// A copy of the fields.
    pub fn fields(&self) -> CallFields {
        lock(&self.0).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> CallContext {
        CallContext::new(
            super::super::UNKNOWN_METHOD,
            "/kmsim.v1.KeyService/WrapKey".to_owned(),
        )
    }

    #[test]
    fn subjects_name_keys_by_id_only() {
        let instance = InstanceId::from_bytes([1; 16]);
        let key = KeyId::from_bytes([2; 16]);
        let by_id: KeyRef = format!("instances/{instance}/keys/{key}").parse().unwrap();
        let by_alias: KeyRef = format!("instances/{instance}/keys/my-alias")
            .parse()
            .unwrap();
        assert!(Subject::Key(by_id.clone()).names_key(key));
        assert!(!Subject::Key(by_id).names_key(KeyId::from_bytes([3; 16])));
        assert!(!Subject::Key(by_alias.clone()).names_key(key));
        assert_eq!(Subject::Key(by_alias).instance(), instance);
        assert!(!Subject::Instance(instance).names_key(key));
    }

    #[tokio::test]
    async fn failures_are_noted_only_inside_the_scope() {
        let failure = Failure {
            code: Code::NotFound,
            reason: "KEY_NOT_FOUND_ERR",
            http_status: 404,
        };
        let outside = context();
        note_failure(failure);
        assert_eq!(outside.fields().failure, None);
        let inside = context();
        inside.clone().scope(async { note_failure(failure) }).await;
        assert_eq!(inside.fields().failure, Some(failure));
        let sync = context();
        sync.sync_scope(|| note_failure(failure));
        assert_eq!(sync.fields().failure, Some(failure));
    }

    #[test]
    fn deferred_faults_are_handed_over_once() {
        let call = context();
        let subject = Subject::Instance(InstanceId::from_bytes([1; 16]));
        assert!(call.name_subject(subject.clone()).is_none());
        call.defer_faults(Arc::new(Faults::default()));
        let (_, method, named) = call.name_subject(subject.clone()).unwrap();
        assert_eq!(method, "/kmsim.v1.KeyService/WrapKey");
        assert_eq!(named, subject);
        assert!(call.name_subject(subject.clone()).is_none());
        assert_eq!(call.fields().subject, Some(subject));
    }
}
