//! The commit mark: a small file beside the database that holds the number of the last commit
//! the store acknowledged.
//!
//! The database holds the same counter, written in every commit. At start-up the store
//! compares them: a database whose counter is behind the mark has lost acknowledged commits (a
//! damaged commit slot made the engine fall back to an older one, or the file was replaced by
//! an older copy), and the server refuses to start instead of serving a silent rollback.
//!
//! The mark is written after each commit without an fsync of its own: it only has to survive
//! the process (the kernel keeps it across `kill -9`), and after a power loss it can only be
//! behind the database, which is the safe direction. It holds two copies of the counter, each
//! with a checksum, so one damaged byte leaves a readable copy.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{StoreError, StoreErrorKind};

const MAGIC: &[u8; 4] = b"KMSC";
/// One copy: magic, counter (big-endian), the first 8 bytes of SHA-256 over both.
const COPY_LEN: usize = 20;
/// Where the second copy starts.
const SECOND_COPY: u64 = 32;

/// The open commit-mark file.
#[derive(Debug)]
pub(super) struct CommitMark {
    file: File,
    path: PathBuf,
}

fn encode(counter: u64) -> [u8; COPY_LEN] {
    let mut copy = [0u8; COPY_LEN];
    copy[..4].copy_from_slice(MAGIC);
    copy[4..12].copy_from_slice(&counter.to_be_bytes());
    let digest = Sha256::digest(&copy[..12]);
    copy[12..].copy_from_slice(&digest[..8]);
    copy
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let copy: [u8; COPY_LEN] = bytes.get(..COPY_LEN)?.try_into().ok()?;
    let counter = u64::from_be_bytes(copy[4..12].try_into().ok()?);
    (encode(counter) == copy).then_some(counter)
}

impl CommitMark {
    /// Opens (or creates, mode 0600) the mark at `path`. Returns the mark and the counter it
    /// holds (`None` for a new or empty file).
    pub(super) fn open(path: &Path) -> Result<(Self, Option<u64>), StoreError> {
        let io = |error: std::io::Error| {
            StoreError::new(
                StoreErrorKind::Io,
                format!("commit mark {}: {error}", path.display()),
            )
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode_private()
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mark = Self {
            file,
            path: path.to_owned(),
        };
        if bytes.is_empty() {
            return Ok((mark, None));
        }
        let first = decode(&bytes);
        let second = bytes
            .get(usize::try_from(SECOND_COPY).unwrap_or(usize::MAX)..)
            .and_then(decode);
        match (first, second) {
            (Some(a), Some(b)) => Ok((mark, Some(a.max(b)))),
            (Some(one), None) | (None, Some(one)) => {
                tracing::warn!(path = %path.display(), "one copy of the commit mark is damaged; using the other");
                Ok((mark, Some(one)))
            }
            (None, None) => Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "the commit mark {} is damaged (both copies fail their checksum): the database cannot be checked for a rollback",
                    path.display()
                ),
            )),
        }
    }

    /// Records `counter` as the last acknowledged commit (both copies; no fsync).
    pub(super) fn record(&self, counter: u64) -> Result<(), StoreError> {
        let copy = encode(counter);
        self.file
            .write_all_at(&copy, 0)
            .and_then(|()| self.file.write_all_at(&copy, SECOND_COPY))
            .map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Io,
                    format!("commit mark {}: {error}", self.path.display()),
                )
            })
    }

    /// Flushes the mark to disk (at close).
    pub(super) fn sync(&self) {
        if let Err(error) = self.file.sync_all() {
            tracing::warn!(path = %self.path.display(), %error, "cannot flush the commit mark");
        }
    }
}

/// `OpenOptions` that create files readable by the owner only.
trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_survives_reopen_and_one_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark");
        let (mark, counter) = CommitMark::open(&path).unwrap();
        assert_eq!(counter, None);
        mark.record(41).unwrap();
        mark.record(42).unwrap();
        drop(mark);
        assert_eq!(CommitMark::open(&path).unwrap().1, Some(42));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(CommitMark::open(&path).unwrap().1, Some(42));
        bytes[38] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let error = CommitMark::open(&path).unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt);
        assert!(error.to_string().contains("mark"));
    }
}
