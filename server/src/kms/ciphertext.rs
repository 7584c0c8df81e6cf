//! The wrapped-data-key format (version 1), documented in `key.proto` at `WrapKeyRequest`:
//! `"KMW1" || key version id (16) || IV (12) || AES-GCM ciphertext || tag (16)`, with the
//! associated data binding the header, the key id and every AAD string.

use crate::error::KmsError;
use crate::kms::ids::{KeyId, KeyVersionId};

/// The magic that starts every version-1 ciphertext.
pub const MAGIC: &[u8; 4] = b"KMW1";
/// Header length: magic and version id.
pub const HEADER_LEN: usize = 4 + 16;
/// GCM IV length.
pub const IV_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Domain-separation label at the start of the associated data.
const AAD_LABEL: &[u8] = b"kmsim-wrap-v1";

/// A parsed ciphertext: which version made it, and the GCM parts.
#[derive(Debug)]
pub struct Ciphertext<'a> {
    /// The key version the data key was wrapped under.
    pub version: KeyVersionId,
    /// The GCM IV.
    pub iv: [u8; IV_LEN],
    /// The GCM ciphertext followed by the tag.
    pub sealed: &'a [u8],
}

impl<'a> Ciphertext<'a> {
    /// Splits `bytes` into its parts. Any malformed input is `UNPROCESSABLE_CIPHERTEXT_ERR`,
    /// as Key Protect answers for a corrupt ciphertext.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, KmsError> {
        if bytes.len() < HEADER_LEN + IV_LEN + TAG_LEN + 1 || &bytes[..4] != MAGIC {
            return Err(KmsError::UnprocessableCiphertext);
        }
        let mut version = [0u8; 16];
        version.copy_from_slice(&bytes[4..HEADER_LEN]);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + IV_LEN]);
        Ok(Self {
            version: KeyVersionId::from_bytes(version),
            iv,
            sealed: &bytes[HEADER_LEN + IV_LEN..],
        })
    }
}

/// The GCM associated data for a data key wrapped by `key` under `version` with `aad`.
pub fn associated_data(key: KeyId, version: KeyVersionId, aad: &[String]) -> Vec<u8> {
    let aad_len: usize = aad.iter().map(|s| 4 + s.len()).sum();
    let mut out = Vec::with_capacity(AAD_LABEL.len() + HEADER_LEN + 16 + aad_len);
    out.extend_from_slice(AAD_LABEL);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(key.as_bytes());
    for item in aad {
        // AAD strings are at most 255 characters (checked at the edge), so the length fits.
        out.extend_from_slice(&u32::try_from(item.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(item.as_bytes());
    }
    out
}

/// Assembles a ciphertext from its parts.
pub fn encode(version: KeyVersionId, iv: &[u8; IV_LEN], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + IV_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(iv);
    out.extend_from_slice(sealed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let version = KeyVersionId::from_bytes([3; 16]);
        let bytes = encode(version, &[9; 12], &[1; 48]);
        let parsed = Ciphertext::parse(&bytes).unwrap();
        assert_eq!(parsed.version, version);
        assert_eq!(parsed.iv, [9; 12]);
        assert_eq!(parsed.sealed, &[1; 48][..]);
    }

    #[test]
    fn malformed_input_is_unprocessable() {
        for bad in [&b""[..], b"KMW1", &[0u8; 64][..]] {
            assert!(matches!(
                Ciphertext::parse(bad),
                Err(KmsError::UnprocessableCiphertext)
            ));
        }
    }

    #[test]
    fn aad_strings_are_length_prefixed() {
        let key = KeyId::from_bytes([1; 16]);
        let version = KeyVersionId::from_bytes([2; 16]);
        let a = associated_data(key, version, &["ab".into(), "c".into()]);
        let b = associated_data(key, version, &["a".into(), "bc".into()]);
        assert_ne!(
            a, b,
            "splitting the same characters differently must change the AAD"
        );
    }
}
