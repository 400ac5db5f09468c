//! A small bounded reader and writer for Dingo's hand-specified binary formats.
//!
//! Integers are big-endian; variable-length fields carry an explicit length prefix whose width is
//! part of the format. A [`Reader`] never reads past its slice and [`Reader::finish`] rejects
//! trailing bytes, so every encoding has exactly one valid decoding.

use thiserror::Error;

/// Why bytes could not be decoded. Deliberately coarse: it names the field, never echoes data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the named field was complete.
    #[error("truncated input while reading {0}")]
    Truncated(&'static str),
    /// A length or count exceeded its limit.
    #[error("{0} exceeds its size limit")]
    TooLarge(&'static str),
    /// The format version is not one this build understands.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// Which format.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// A field held a value outside its domain.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes were left over after a complete value.
    #[error("trailing bytes after {0}")]
    Trailing(&'static str),
}

/// Reads fields from a byte slice, failing instead of panicking on short input.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    /// Takes one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Takes a big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Takes a big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Takes a big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Takes a u8-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn short_str(&mut self, max: usize, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u8(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLarge(field));
        }
        let raw = self.bytes(len, field)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Invalid(field))
    }

    /// Takes a u32-length-prefixed byte string of at most `max` bytes.
    pub fn long_bytes(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLarge(field));
        }
        self.bytes(len, field)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(what))
        }
    }
}

/// Appends fields in the same layout [`Reader`] reads.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// Appends a u8-length-prefixed string; callers keep it within the field's limit.
    pub fn short_str(&mut self, s: &str) -> &mut Self {
        let len = s.len().min(u8::MAX as usize);
        self.u8(len as u8).bytes(&s.as_bytes()[..len])
    }
    /// Appends a u32-length-prefixed byte string.
    pub fn long_bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32).bytes(b)
    }
    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// What a printable code's errors call its parts (they name fields, never echo input).
#[derive(Debug, Clone, Copy)]
pub struct CodeNames {
    /// Reported when the prefix is missing.
    pub prefix: &'static str,
    /// The code itself (too large, truncated).
    pub code: &'static str,
    /// Reported when the base64url is invalid.
    pub encoding: &'static str,
    /// Reported when the checksum does not match.
    pub checksum: &'static str,
}

/// A printable code: `prefix` then unpadded base64url of `payload | blake3(payload)[..4]`; the
/// checksum catches typos before anything else is checked.
pub fn to_checked_code(prefix: &str, payload: &[u8]) -> String {
    let mut raw = payload.to_vec();
    raw.extend_from_slice(&blake3::hash(payload).as_bytes()[..4]);
    format!("{prefix}{}", data_encoding::BASE64URL_NOPAD.encode(&raw))
}

/// The payload of a code made by [`to_checked_code`] (surrounding whitespace allowed), at most
/// `max_chars` long after the prefix.
pub fn from_checked_code(
    code: &str,
    prefix: &str,
    max_chars: usize,
    names: CodeNames,
) -> Result<Vec<u8>, DecodeError> {
    let body = code.trim().strip_prefix(prefix).ok_or(DecodeError::Invalid(names.prefix))?;
    if body.len() > max_chars {
        return Err(DecodeError::TooLarge(names.code));
    }
    let mut raw = data_encoding::BASE64URL_NOPAD
        .decode(body.as_bytes())
        .map_err(|_| DecodeError::Invalid(names.encoding))?;
    if raw.len() < 4 {
        return Err(DecodeError::Truncated(names.code));
    }
    let check = raw.split_off(raw.len() - 4);
    if blake3::hash(&raw).as_bytes()[..4] != check[..] {
        return Err(DecodeError::Invalid(names.checksum));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_short_and_trailing_input() {
        let mut r = Reader::new(&[0, 1]);
        assert_eq!(r.u32("x"), Err(DecodeError::Truncated("x")));
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.u16("x"), Ok(1));
        assert_eq!(r.finish("y"), Err(DecodeError::Trailing("y")));
    }

    #[test]
    fn length_prefixes_are_bounded() {
        let mut w = Writer::new();
        w.long_bytes(&[7; 10]);
        let bytes = w.into_bytes();
        assert_eq!(Reader::new(&bytes).long_bytes(9, "f"), Err(DecodeError::TooLarge("f")));
        assert_eq!(Reader::new(&bytes).long_bytes(10, "f"), Ok(&[7u8; 10][..]));
    }
}
