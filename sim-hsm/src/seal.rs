//! Sealing of persisted records under the master key (the outer layer of every stored record).
//!
//! Record layout: `"SHSM" | version (1) | master-key fingerprint (8) | nonce (12) | AES-256-GCM(body) | tag (16)`.
//! The associated data is the header plus the record's store key, so a record cannot be moved to another key
//! name, and any flipped byte fails authentication (`DeviceError`). A record whose fingerprint names another
//! master key gives `WrongMasterKey`.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::HsmError;
use crate::primitives;

const MAGIC: &[u8; 4] = b"SHSM";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 8;

/// A 256-bit master key with its fingerprint (verification pattern). Zeroized on drop, never printed.
#[derive(Clone)]
pub(crate) struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    fingerprint: [u8; 8],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(vp={:02x?})", self.fingerprint)
    }
}

/// The verification pattern of a 256-bit master-key value: the first 8 bytes of
/// SHA-256("sim-hsm/master-key-vp/v1" || key).
pub(crate) fn verification_pattern(key: &[u8; 32]) -> [u8; 8] {
    let mut buf = Zeroizing::new(Vec::with_capacity(64));
    buf.extend_from_slice(b"sim-hsm/master-key-vp/v1");
    buf.extend_from_slice(key);
    let d = primitives::sha256(&buf);
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&d[..8]);
    fp
}

impl MasterKey {
    pub(crate) fn new(key: Zeroizing<[u8; 32]>) -> Self {
        let fingerprint = verification_pattern(&key);
        Self { key, fingerprint }
    }

    pub(crate) fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5..].copy_from_slice(&self.fingerprint);
        h
    }

    /// Seals `body` for the store key `record_key` with a fresh `nonce`.
    pub(crate) fn seal(
        &self,
        record_key: &[u8],
        nonce: &[u8; 12],
        body: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let header = self.header();
        let mut aad = Vec::with_capacity(HEADER_LEN + record_key.len());
        aad.extend_from_slice(&header);
        aad.extend_from_slice(record_key);
        let sealed = primitives::seal256(&self.key, nonce, &aad, body)?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a record sealed by [`MasterKey::seal`] for `record_key`.
    pub(crate) fn open(
        &self,
        record_key: &[u8],
        record: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let fp = record_fingerprint(record).ok_or(HsmError::DeviceError)?;
        if fp != self.fingerprint {
            return Err(HsmError::WrongMasterKey);
        }
        let (header, sealed) = record.split_at(HEADER_LEN);
        let mut aad = Vec::with_capacity(HEADER_LEN + record_key.len());
        aad.extend_from_slice(header);
        aad.extend_from_slice(record_key);
        primitives::open256(&self.key, &aad, sealed, || HsmError::DeviceError)
    }
}

/// The master-key fingerprint in a record's header, if the header is well-formed.
pub(crate) fn record_fingerprint(record: &[u8]) -> Option<[u8; 8]> {
    if record.len() < HEADER_LEN || &record[..4] != MAGIC || record[4] != VERSION {
        return None;
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&record[5..HEADER_LEN]);
    Some(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let mk = MasterKey::new(Zeroizing::new([9u8; 32]));
        let r = mk.seal(b"k", &[1; 12], b"body").unwrap();
        assert_eq!(&mk.open(b"k", &r).unwrap()[..], b"body");
        assert!(matches!(mk.open(b"other", &r), Err(HsmError::DeviceError)));
        for i in 0..r.len() {
            let mut t = r.clone();
            t[i] ^= 0x80;
            assert!(mk.open(b"k", &t).is_err(), "byte {i}");
        }
        let other = MasterKey::new(Zeroizing::new([8u8; 32]));
        assert!(matches!(
            other.open(b"k", &r),
            Err(HsmError::WrongMasterKey)
        ));
    }
}
