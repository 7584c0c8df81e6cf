//! The module's random bit generator: a ChaCha20 DRBG (seeded from the OS, or from a fixed seed for reproducible
//! runs) behind the FIPS 140-2 §4.9.2 continuous RNG test.
//!
//! [`RandomSource`] is the pluggable entropy/DRBG interface (tests inject a constant source to trip the
//! continuous test); `ModuleRng` adds the continuous test on top; `Generators` is the module's set of them:
//! with OS entropy, one independently seeded generator per stripe, a thread always drawing from the same
//! stripe, so that no lock is shared by every caller; with a fixed seed (reproducible runs) or an injected
//! source, one shared generator, since a single sequence is what makes a run reproducible.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use zeroize::Zeroizing;

use crate::error::HsmError;

/// Size of the block the continuous RNG test compares (FIPS 140-2: n > 15 bits; we use 128 bits).
pub const CRNGT_BLOCK: usize = 16;

/// A source of random bytes for the module (DRBG output).
pub trait RandomSource: Send {
    /// Fills `dest` with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), HsmError>;
}

/// ChaCha20 DRBG seeded from the operating system and reseeded every [`OsSeededDrbg::RESEED_INTERVAL`] requests.
pub struct OsSeededDrbg {
    inner: ChaCha20Rng,
    requests: u64,
}

impl OsSeededDrbg {
    /// Requests between reseeds from the OS.
    pub const RESEED_INTERVAL: u64 = 1 << 16;

    /// Instantiates the DRBG from OS entropy.
    pub fn new() -> Result<Self, HsmError> {
        Ok(Self {
            inner: Self::seeded()?,
            requests: 0,
        })
    }

    fn seeded() -> Result<ChaCha20Rng, HsmError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..]).map_err(|_| HsmError::DeviceError)?;
        Ok(ChaCha20Rng::from_seed(*seed))
    }
}

impl RandomSource for OsSeededDrbg {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), HsmError> {
        self.requests += 1;
        if self.requests >= Self::RESEED_INTERVAL {
            self.inner = Self::seeded()?;
            self.requests = 0;
        }
        self.inner.fill_bytes(dest);
        Ok(())
    }
}

/// Deterministic ChaCha20 generator from a fixed 32-byte seed (reproducible runs; never for production).
pub struct SeededDrbg {
    inner: ChaCha20Rng,
}

impl SeededDrbg {
    /// Instantiates the generator from `seed`.
    #[must_use]
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }
}

impl RandomSource for SeededDrbg {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), HsmError> {
        self.inner.fill_bytes(dest);
        Ok(())
    }
}

/// The DRBG KAT run by the power-on self-test: ChaCha20 with an all-zero key, nonce and counter must produce the
/// RFC 8439 §A.1 test vector #1 keystream.
pub(crate) fn drbg_known_answer() -> bool {
    const EXPECTED: [u8; 32] = [
        0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86, 0xbd,
        0x28, 0xbd, 0xd2, 0x19, 0xb8, 0xa0, 0x8d, 0xed, 0x1a, 0xa8, 0x36, 0xef, 0xcc, 0x8b, 0x77,
        0x0d, 0xc7,
    ];
    let mut rng = ChaCha20Rng::from_seed([0u8; 32]);
    let mut out = [0u8; 32];
    rng.fill_bytes(&mut out);
    out == EXPECTED
}

/// The module's generator: a [`RandomSource`] with the continuous RNG test applied to every 16-byte block.
pub(crate) struct ModuleRng {
    source: Box<dyn RandomSource>,
    last: Option<Zeroizing<[u8; CRNGT_BLOCK]>>,
}

impl ModuleRng {
    pub(crate) fn new(source: Box<dyn RandomSource>) -> Self {
        Self { source, last: None }
    }

    /// Fills `dest`; `Err(FipsSelfTestFailed)` when two consecutive blocks are equal (the caller then enters the
    /// error state). `force_failure` simulates that outcome (fault injection "CRNGT").
    pub(crate) fn fill(&mut self, dest: &mut [u8], force_failure: bool) -> Result<(), HsmError> {
        for chunk in dest.chunks_mut(CRNGT_BLOCK) {
            let mut block = Zeroizing::new([0u8; CRNGT_BLOCK]);
            self.source.fill_bytes(&mut block[..])?;
            let repeated = self.last.as_ref().is_some_and(|l| **l == *block);
            if repeated || force_failure {
                chunk.fill(0);
                return Err(HsmError::FipsSelfTestFailed);
            }
            chunk.copy_from_slice(&block[..chunk.len()]);
            self.last = Some(block);
        }
        Ok(())
    }

    /// Forgets the last block (after a reset the first block is compared with nothing).
    pub(crate) fn reset(&mut self) {
        self.last = None;
    }
}

/// How many independently seeded generators the module keeps with OS entropy.
pub(crate) const STRIPES: usize = 16;

/// The module's generators (see the module documentation).
pub(crate) enum Generators {
    /// One generator for every caller (a fixed seed or an injected source).
    Shared(std::sync::Mutex<ModuleRng>),
    /// One OS-seeded generator per stripe; a thread uses the stripe it was given first.
    Striped(Box<[std::sync::Mutex<ModuleRng>]>),
}

impl Generators {
    /// One shared generator over `source`.
    pub(crate) fn shared(source: Box<dyn RandomSource>) -> Self {
        Self::Shared(std::sync::Mutex::new(ModuleRng::new(source)))
    }

    /// [`STRIPES`] generators, each seeded from the operating system.
    pub(crate) fn striped() -> Result<Self, HsmError> {
        let stripes = (0..STRIPES)
            .map(|_| {
                let source: Box<dyn RandomSource> = Box::new(OsSeededDrbg::new()?);
                Ok(std::sync::Mutex::new(ModuleRng::new(source)))
            })
            .collect::<Result<Vec<_>, HsmError>>()?;
        Ok(Self::Striped(stripes.into_boxed_slice()))
    }

    /// The calling thread's stripe number (assigned round-robin on first use).
    fn stripe() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        }
        STRIPE.with(|stripe| *stripe)
    }

    /// Fills `dest` from the caller's generator (see [`ModuleRng::fill`]).
    pub(crate) fn fill(&self, dest: &mut [u8], force_failure: bool) -> Result<(), HsmError> {
        let generator = match self {
            Self::Shared(generator) => generator,
            Self::Striped(stripes) => &stripes[Self::stripe() % stripes.len()],
        };
        crate::hsm::lock(generator).fill(dest, force_failure)
    }

    /// Resets every generator's continuous test.
    pub(crate) fn reset(&self) {
        match self {
            Self::Shared(generator) => crate::hsm::lock(generator).reset(),
            Self::Striped(stripes) => {
                for generator in stripes.iter() {
                    crate::hsm::lock(generator).reset();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_generators_serve_every_thread_and_differ() {
        let generators = std::sync::Arc::new(Generators::striped().unwrap());
        let draws: Vec<[u8; 32]> = (0..4)
            .map(|_| {
                let generators = std::sync::Arc::clone(&generators);
                std::thread::spawn(move || {
                    let mut out = [0u8; 32];
                    generators.fill(&mut out, false).unwrap();
                    out
                })
                .join()
                .unwrap()
            })
            .collect();
        for (i, a) in draws.iter().enumerate() {
            assert_ne!(*a, [0u8; 32]);
            for b in &draws[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let mut out = [0u8; 16];
        assert!(matches!(
            generators.fill(&mut out, true),
            Err(HsmError::FipsSelfTestFailed)
        ));
    }

    #[test]
    fn a_seeded_shared_generator_is_reproducible() {
        let draw = || {
            let generators = Generators::shared(Box::new(SeededDrbg::new([7; 32])));
            let mut out = [0u8; 48];
            generators.fill(&mut out, false).unwrap();
            out
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn chacha_kat() {
        assert!(drbg_known_answer());
    }

    struct Constant;
    impl RandomSource for Constant {
        fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), HsmError> {
            dest.fill(7);
            Ok(())
        }
    }

    #[test]
    fn continuous_test_trips_on_repeat() {
        let mut r = ModuleRng::new(Box::new(Constant));
        let mut b = [0u8; 16];
        r.fill(&mut b, false).unwrap();
        assert!(r.fill(&mut b, false).is_err());
        assert_eq!(b, [0u8; 16]);
    }

    #[test]
    fn seeded_is_reproducible() {
        let mut a = SeededDrbg::new([1; 32]);
        let mut b = SeededDrbg::new([1; 32]);
        let (mut x, mut y) = ([0u8; 40], [0u8; 40]);
        a.fill_bytes(&mut x).unwrap();
        b.fill_bytes(&mut y).unwrap();
        assert_eq!(x, y);
    }
}
