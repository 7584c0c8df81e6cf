//! Fault injection: rules that make matching kmsim calls fail (`UNAVAILABLE`,
//! `RESOURCE_EXHAUSTED` with a retry delay, `INTERNAL`, `DEADLINE_EXCEEDED`, an HSM device
//! error) or run late, on every Nth matching call or with a probability drawn from a seeded
//! generator, for a number of firings or until cleared.
//!
//! [`Faults`] holds the rules; [`layer::FaultLayer`] applies the rules that match on the
//! method alone to every call before it reaches a service, and leaves the rules that filter
//! by instance or key to the edge, which applies them once it has parsed what the request
//! names (see [`crate::audit::context`]). The simulator's own service is never matched, so
//! faults can always be cleared.
//!
//! Reading is lock-free: the layer asks a published summary of the rules (an `arc-swap`
//! pointer, one atomic load) whether any rule matches the call's method, so with no rule in
//! force (the normal case) a call costs one load and never touches a lock. Only a call that
//! a rule matches takes the rules' mutex, to count it and draw its trigger.

pub mod layer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::audit::Subject;
use crate::kms::ids::{InstanceId, KeyId};
use crate::kms::lock;

/// Which calls a rule matches, by gRPC method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodPattern {
    /// Every kmsim call (`*`).
    Any,
    /// Every method of a service (`kmsim.v1.KeyService/*`).
    Service(String),
    /// One method of one service (`kmsim.v1.KeyService/WrapKey`).
    Exact(String),
    /// A method name in any service (`WrapKey`).
    Name(String),
}

impl MethodPattern {
    /// Parses a pattern; `None` when it is empty or malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches('/');
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        };
        match text.split_once('/') {
            None if text == "*" => Some(Self::Any),
            None if valid(text) && !text.contains('.') => Some(Self::Name(text.to_owned())),
            Some((service, "*")) if valid(service) => Some(Self::Service(service.to_owned())),
            Some((service, method)) if valid(service) && valid(method) => {
                Some(Self::Exact(format!("{service}/{method}")))
            }
            _ => None,
        }
    }

    /// Whether the call to `path` (`/package.Service/Method`) matches.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        match self {
            Self::Any => true,
            Self::Service(service) => path
                .split_once('/')
                .is_some_and(|(s, _)| s == service.as_str()),
            Self::Exact(exact) => path == exact.as_str(),
            Self::Name(name) => path
                .split_once('/')
                .is_some_and(|(_, m)| m == name.as_str()),
        }
    }
}

impl std::fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Service(service) => write!(f, "{service}/*"),
            Self::Exact(exact) => f.write_str(exact),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// What a fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Fails with `UNAVAILABLE`.
    Unavailable,
    /// Fails with `RESOURCE_EXHAUSTED` and this retry delay.
    ResourceExhausted(Duration),
    /// Fails with `INTERNAL`.
    Internal,
    /// Fails with `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
    /// Delays the call, which then runs normally.
    Latency(Duration),
    /// Fails as an HSM device error would (`UNAVAILABLE`, `HSM_DEVICE_ERR`).
    HsmDeviceError,
}

/// An injected failure, as the error mapping sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InjectedFailure {
    /// `UNAVAILABLE`.
    Unavailable,
    /// `RESOURCE_EXHAUSTED` with a retry delay.
    ResourceExhausted(Duration),
    /// `INTERNAL`.
    Internal,
    /// `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
    /// An HSM device error.
    HsmDeviceError,
}

/// When a rule fires among its matching calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// On the Nth, 2Nth, ... matching call (N >= 1).
    EveryNth(u32),
    /// With this probability in (0, 1], from a generator seeded with `seed`.
    Probability {
        /// The probability.
        probability: f64,
        /// The generator's seed.
        seed: u64,
    },
}

/// The seeded generator of probability triggers: SplitMix64, whose `n`th draw, scaled to
/// [0, 1) with 53 bits, fires when below the probability. Public so clients (and tests) can
/// predict exactly which calls fire.
#[derive(Debug, Clone)]
pub struct SeededDraws {
    state: u64,
}

impl SeededDraws {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next draw in [0, 1).
    pub fn next_draw(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 high bits: exactly representable in an f64.
        #[allow(clippy::cast_precision_loss)]
        let draw = (z >> 11) as f64 / (1u64 << 53) as f64;
        draw
    }

    /// Whether the next matching call fires with `probability`.
    pub fn fires(&mut self, probability: f64) -> bool {
        self.next_draw() < probability
    }
}

/// A validated fault rule.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The methods it matches.
    pub method: MethodPattern,
    /// Only calls naming this instance.
    pub instance: Option<InstanceId>,
    /// Only calls naming this key.
    pub key: Option<KeyId>,
    /// What it does.
    pub kind: FaultKind,
    /// When it fires.
    pub trigger: Trigger,
    /// Firings before it is used up; `None` until cleared.
    pub count: Option<u32>,
}

/// A rule in force, with its counters.
#[derive(Debug, Clone)]
pub struct ActiveRule {
    /// Its id.
    pub id: String,
    /// The rule.
    pub rule: FaultRule,
    /// Matching calls seen.
    pub matched: u64,
    /// Times fired.
    pub fired: u64,
    draws: Option<SeededDraws>,
}

/// What the layer does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Fail it.
    Fail(InjectedFailure),
    /// Delay it, then run it.
    Delay(Duration),
}

/// Which rules a decision considers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The rules that match on the method alone (decided by the layer, before the call).
    Method,
    /// The rules that filter by instance or key, for a call naming this subject (decided by
    /// the edge once it has parsed the request).
    Subject(&'a Subject),
}

/// What the lock-free read side knows of one rule.
#[derive(Debug, Clone)]
struct Summary {
    method: MethodPattern,
    filtered: bool,
}

/// The fault rules in force.
#[derive(Debug, Default)]
pub struct Faults {
    /// The rules with their counters; every change republishes `summary`.
    rules: Mutex<Vec<ActiveRule>>,
    /// The published summary of `rules`, read without a lock.
    summary: ArcSwap<Vec<Summary>>,
    /// Rule ids (seeded under `--deterministic`).
    random: crate::random::Randomness,
}

impl Faults {
    /// No rules; rule ids drawn from `random`.
    pub fn with_random(random: crate::random::Randomness) -> Self {
        Self {
            rules: Mutex::default(),
            summary: ArcSwap::default(),
            random,
        }
    }

    /// Republishes the summary of `rules` (called with the rules' mutex held, so summaries
    /// are published in the order of the changes).
    fn publish(&self, rules: &[ActiveRule]) {
        self.summary.store(Arc::new(
            rules
                .iter()
                .map(|r| Summary {
                    method: r.rule.method.clone(),
                    filtered: r.rule.instance.is_some() || r.rule.key.is_some(),
                })
                .collect(),
        ));
    }

    /// Adds a rule and returns it with its id.
    pub fn inject(&self, rule: FaultRule) -> ActiveRule {
        let draws = match rule.trigger {
            Trigger::Probability { seed, .. } => Some(SeededDraws::new(seed)),
            Trigger::EveryNth(_) => None,
        };
        let active = ActiveRule {
            id: self.random.uuid().to_string(),
            rule,
            matched: 0,
            fired: 0,
            draws,
        };
        let mut rules = lock(&self.rules);
        rules.push(active.clone());
        self.publish(&rules);
        active
    }

    /// The rules in force, oldest first.
    pub fn list(&self) -> Vec<ActiveRule> {
        lock(&self.rules).clone()
    }

    /// Removes the rule `id`, or every rule when `None`; returns how many were removed.
    pub fn clear(&self, id: Option<&str>) -> usize {
        let mut rules = lock(&self.rules);
        let before = rules.len();
        match id {
            Some(id) => rules.retain(|r| r.id != id),
            None => rules.clear(),
        }
        self.publish(&rules);
        before - rules.len()
    }

    /// Whether no rule is in force (lock-free).
    pub fn is_empty(&self) -> bool {
        self.summary.load().is_empty()
    }

    /// Whether some rule in `scope`'s family may match a call to `path` (lock-free): only
    /// then does a decision take the rules' mutex.
    fn may_match(&self, path: &str, filtered: bool) -> bool {
        self.summary
            .load()
            .iter()
            .any(|r| r.filtered == filtered && r.method.matches(path))
    }

    /// Whether some rule for `path` filters by instance or key, so the edge must decide it
    /// once it knows what the call names (lock-free).
    pub fn needs_subject(&self, path: &str) -> bool {
        self.may_match(path, true)
    }

    /// Decides a call to `path` among the rules of `scope`. Every matching rule counts the
    /// call and draws its trigger; the oldest rule that fires decides; every rule that fires
    /// counts it, and rules whose count is used up are removed.
    pub fn decide(&self, path: &str, scope: Scope<'_>) -> Option<Injection> {
        let filtered = matches!(scope, Scope::Subject(_));
        if !self.may_match(path, filtered) {
            return None;
        }
        let mut rules = lock(&self.rules);
        let mut decision = None;
        for active in rules.iter_mut() {
            let rule = &active.rule;
            if (rule.instance.is_some() || rule.key.is_some()) != filtered
                || !rule.method.matches(path)
            {
                continue;
            }
            if let Scope::Subject(subject) = scope {
                if rule.instance.is_some_and(|i| subject.instance() != i)
                    || rule.key.is_some_and(|k| !subject.names_key(k))
                {
                    continue;
                }
            }
            active.matched += 1;
            let fires = match (rule.trigger, active.draws.as_mut()) {
                (Trigger::EveryNth(n), _) => active.matched % u64::from(n.max(1)) == 0,
                (Trigger::Probability { probability, .. }, Some(draws)) => draws.fires(probability),
                (Trigger::Probability { .. }, None) => false,
            };
            if !fires {
                continue;
            }
            active.fired += 1;
            if decision.is_none() {
                decision = Some(match rule.kind {
                    FaultKind::Unavailable => Injection::Fail(InjectedFailure::Unavailable),
                    FaultKind::ResourceExhausted(delay) => {
                        Injection::Fail(InjectedFailure::ResourceExhausted(delay))
                    }
                    FaultKind::Internal => Injection::Fail(InjectedFailure::Internal),
                    FaultKind::DeadlineExceeded => {
                        Injection::Fail(InjectedFailure::DeadlineExceeded)
                    }
                    FaultKind::Latency(delay) => Injection::Delay(delay),
                    FaultKind::HsmDeviceError => Injection::Fail(InjectedFailure::HsmDeviceError),
                });
            }
        }
        let before = rules.len();
        rules.retain(|r| r.rule.count.is_none_or(|count| r.fired < u64::from(count)));
        if rules.len() != before {
            self.publish(&rules);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::ids::KeyRef;

    fn rule(method: &str, trigger: Trigger, count: Option<u32>) -> FaultRule {
        FaultRule {
            method: MethodPattern::parse(method).unwrap(),
            instance: None,
            key: None,
            kind: FaultKind::Internal,
            trigger,
            count,
        }
    }

    #[test]
    fn patterns_match_methods() {
        let path = "/kmsim.v1.KeyService/WrapKey";
        for (pattern, matches) in [
            ("*", true),
            ("kmsim.v1.KeyService/*", true),
            ("/kmsim.v1.KeyService/WrapKey", true),
            ("WrapKey", true),
            ("UnwrapKey", false),
            ("kmsim.v1.InstanceService/*", false),
        ] {
            assert_eq!(
                MethodPattern::parse(pattern).unwrap().matches(path),
                matches,
                "{pattern}"
            );
        }
        for bad in ["", "a/b/c", "kms v1", "kmsim.v1.KeyService"] {
            assert_eq!(MethodPattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_nth_fires_on_multiples_and_count_uses_the_rule_up() {
        let faults = Faults::default();
        faults.inject(rule("WrapKey", Trigger::EveryNth(3), Some(2)));
        let fired: Vec<bool> = (0..9)
            .map(|_| {
                faults
                    .decide("/kmsim.v1.KeyService/WrapKey", Scope::Method)
                    .is_some()
            })
            .collect();
        assert_eq!(
            fired,
            [false, false, true, false, false, true, false, false, false]
        );
        assert!(faults.is_empty());
    }

    #[test]
    fn filtered_rules_are_decided_by_subject_and_others_by_method() {
        let faults = Faults::default();
        let instance = InstanceId::from_bytes([1; 16]);
        let key = KeyId::from_bytes([2; 16]);
        let path = "/kmsim.v1.KeyService/WrapKey";
        assert_eq!(faults.decide(path, Scope::Method), None);
        faults.inject(FaultRule {
            key: Some(key),
            ..rule("WrapKey", Trigger::EveryNth(1), None)
        });
        assert!(faults.needs_subject(path));
        assert!(!faults.needs_subject("/kmsim.v1.KeyService/GetKey"));
        // The method scope does not see a filtered rule.
        assert_eq!(faults.decide(path, Scope::Method), None);
        let other: KeyRef = format!("instances/{instance}/keys/{}", KeyId::from_bytes([3; 16]))
            .parse()
            .unwrap();
        assert_eq!(
            faults.decide(path, Scope::Subject(&Subject::Key(other))),
            None
        );
        let named: KeyRef = format!("instances/{instance}/keys/{key}").parse().unwrap();
        assert_eq!(
            faults.decide(path, Scope::Subject(&Subject::Key(named))),
            Some(Injection::Fail(InjectedFailure::Internal))
        );
        faults.inject(FaultRule {
            instance: Some(InstanceId::from_bytes([9; 16])),
            ..rule("*", Trigger::EveryNth(1), None)
        });
        assert_eq!(
            faults.decide(path, Scope::Subject(&Subject::Instance(instance))),
            None
        );
        assert_eq!(faults.list().iter().map(|r| r.matched).sum::<u64>(), 1);
        assert_eq!(faults.clear(None), 2);
        assert!(faults.is_empty() && !faults.needs_subject(path));
    }

    #[test]
    fn seeded_draws_are_reproducible() {
        let mut a = SeededDraws::new(7);
        let mut b = SeededDraws::new(7);
        let draws: Vec<f64> = (0..100).map(|_| a.next_draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert_eq!(draws, (0..100).map(|_| b.next_draw()).collect::<Vec<_>>());
        let fired = draws.iter().filter(|d| **d < 0.5).count();
        assert!((30..70).contains(&fired), "{fired}");
    }
}
