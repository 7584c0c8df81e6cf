//! A tiny length-prefixed binary encoding for record bodies (not cryptography; framing only).
//!
//! Every reader error maps to `HsmError::DeviceError`: a record that parses badly after passing its AEAD check
//! means an internal bug or a format mismatch, and must never yield garbage.

use zeroize::Zeroizing;

use crate::error::HsmError;

/// Appends fields to a buffer that is zeroized on drop (record bodies may hold secrets before sealing).
#[derive(Default)]
pub(crate) struct Writer {
    buf: Zeroizing<Vec<u8>>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // Records are far below 4 GiB; a longer field is a caller bug, truncation is impossible in practice.
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub(crate) fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(b) => self.u8(1).bytes(b),
            None => self.u8(0),
        }
    }

    pub(crate) fn finish(self) -> Zeroizing<Vec<u8>> {
        self.buf
    }
}

/// Reads fields written by [`Writer`].
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HsmError> {
        if self.data.len() < n {
            return Err(HsmError::DeviceError);
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, HsmError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, HsmError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(HsmError::DeviceError),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, HsmError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, HsmError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], HsmError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String, HsmError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| HsmError::DeviceError)
    }

    pub(crate) fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, HsmError> {
        if self.bool()? {
            Ok(Some(self.bytes()?))
        } else {
            Ok(None)
        }
    }

    pub(crate) fn finish(self) -> Result<(), HsmError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(HsmError::DeviceError)
        }
    }
}
