//! The server's one source of randomness outside the HSM: ids (every UUID the domain mints),
//! API-key secrets and salts, fault-rule ids. By default it is the operating system's
//! generator; under `--deterministic SEED` it is a ChaCha20 generator
//! ([`sim_hsm::rng::SeededDrbg`]) seeded from SEED, and the HSM's generator is seeded from the
//! same SEED ([`hsm_seed`]), so two servers given the same seed, the same simulated clock
//! start and the same calls in the same order answer byte for byte alike.
//!
//! It also carries the ids a seed file fixes (`Randomness::preset_ids`): start-up seeding
//! queues them and the next [`Randomness::uuid`] calls return them in order, so the domain's
//! own create functions (with every rule they check) make records with the file's ids.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use sim_hsm::rng::{RandomSource, SeededDrbg};
use zeroize::Zeroizing;

use crate::kms::lock;

/// Domain separation of the two generators derived from one `--deterministic` seed.
const SERVER_LABEL: &[u8] = b"kmsim-deterministic-server-v1";
const HSM_LABEL: &[u8] = b"kmsim-deterministic-hsm-v1";
/// Domain separation of the correlation-id prefix derived from a `--deterministic` seed.
const CORRELATION_LABEL: &[u8] = b"kmsim-deterministic-correlation-v1";

#[derive(Default)]
struct State {
    /// `Some` in deterministic mode.
    seeded: Option<SeededDrbg>,
    /// Ids handed out before any generated one (start-up seeding only).
    preset: VecDeque<uuid::Uuid>,
    /// The prefix of generated correlation ids (set on first use, or by
    /// [`Randomness::make_deterministic`]) and how many were generated.
    correlation_prefix: Option<String>,
    correlations: u64,
}

/// A shared handle on the server's random source (clones share one generator).
#[derive(Clone, Default)]
pub struct Randomness {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Randomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let deterministic = lock(&self.state).seeded.is_some();
        f.debug_struct("Randomness")
            .field("deterministic", &deterministic)
            .finish()
    }
}

fn derive(seed: u64, label: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(label);
    hash.update(seed.to_be_bytes());
    hash.finalize().into()
}

/// The 32-byte seed of the HSM's generator for `--deterministic seed`.
pub fn hsm_seed(seed: u64) -> [u8; 32] {
    derive(seed, HSM_LABEL)
}

impl Randomness {
    /// Switches every clone of this handle to a ChaCha20 generator seeded from `seed`.
    pub fn make_deterministic(&self, seed: u64) {
        let mut state = lock(&self.state);
        state.seeded = Some(SeededDrbg::new(derive(seed, SERVER_LABEL)));
        state.correlation_prefix = Some(hex::encode(&derive(seed, CORRELATION_LABEL)[..4]));
    }

    /// A fresh correlation id for a call that sent none: `kmsim-<prefix>-<n>`, `n` counting
    /// from 1 per server. The prefix is random per server, or derived from SEED under
    /// `--deterministic` (so two such servers given the same calls mint the same ids). It
    /// never draws from the seeded generator, so minting one changes no other value.
    pub fn correlation_id(&self) -> String {
        let mut state = lock(&self.state);
        state.correlations += 1;
        let count = state.correlations;
        let prefix = state.correlation_prefix.get_or_insert_with(|| {
            let mut bytes = [0u8; 4];
            // Without entropy the counter still makes ids unique within the server.
            let _ = getrandom::fill(&mut bytes);
            hex::encode(bytes)
        });
        format!("kmsim-{prefix}-{count}")
    }

    /// Whether the generator is seeded.
    pub fn is_deterministic(&self) -> bool {
        lock(&self.state).seeded.is_some()
    }

    /// Fills `dest` with random bytes.
    pub fn fill(&self, dest: &mut [u8]) {
        let mut state = lock(&self.state);
        match state.seeded.as_mut() {
            // A seeded ChaCha20 generator never fails.
            Some(drbg) => {
                if drbg.fill_bytes(dest).is_err() {
                    unreachable!("SeededDrbg::fill_bytes is infallible")
                }
            }
            // The OS generator only fails when the platform has no entropy source at all; a
            // server cannot mint ids or credentials there, so refusing to continue is the only
            // sound answer.
            None => getrandom::fill(dest).unwrap_or_else(|e| panic!("no OS random source: {e}")),
        }
    }

    /// A version-4 UUID: the next preset id if any, else a random one.
    pub fn uuid(&self) -> uuid::Uuid {
        if let Some(id) = lock(&self.state).preset.pop_front() {
            return id;
        }
        let mut bytes = [0u8; 16];
        self.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A random secret of `len` bytes as base64url, zeroized when dropped.
    pub fn secret(&self, len: usize) -> Zeroizing<String> {
        use base64::Engine;
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        self.fill(bytes.as_mut_slice());
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice()))
    }

    /// Runs `f` with `ids` handed out by the next [`Randomness::uuid`] calls, in order, then
    /// drops any `f` did not use and returns how many it used. Only for start-up seeding,
    /// before the server takes calls (a concurrent caller would take a preset id).
    pub(crate) fn preset_ids<T>(&self, ids: &[uuid::Uuid], f: impl FnOnce() -> T) -> (T, usize) {
        lock(&self.state).preset = ids.iter().copied().collect();
        let result = f();
        let left = std::mem::take(&mut lock(&self.state).preset).len();
        (result, ids.len() - left)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn seeded_sources_repeat_and_differ_by_seed() {
        let draw = |seed: Option<u64>| {
            let random = Randomness::default();
            if let Some(seed) = seed {
                random.make_deterministic(seed);
            }
            (random.uuid(), random.secret(16).to_string())
        };
        assert_eq!(draw(Some(7)), draw(Some(7)));
        assert_ne!(draw(Some(7)), draw(Some(8)));
        assert_ne!(draw(None), draw(None));
        assert_ne!(hsm_seed(7), derive(7, SERVER_LABEL));
        assert_eq!(draw(Some(7)).0.get_version_num(), 4);
    }

    #[test]
    fn preset_ids_come_first_and_leftovers_are_dropped() {
        let random = Randomness::default();
        let a = uuid::Uuid::from_bytes([1; 16]);
        let b = uuid::Uuid::from_bytes([2; 16]);
        let (got, used) = random.preset_ids(&[a, b], || random.uuid());
        assert_eq!((got, used), (a, 1));
        assert_ne!(random.uuid(), b);
    }
}
