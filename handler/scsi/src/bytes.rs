//! Bounds-checked big-endian accessors over untrusted byte slices.
//!
//! Reads past the end yield zero bytes; writes past the end are dropped. This
//! keeps the decoders and emitters free of indexing panics.

/// Byte `i` of `b`, or 0 when out of range.
pub(crate) fn u8_at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Big-endian unsigned integer of `n` (<= 8) bytes starting at `i`.
pub(crate) fn be_at(b: &[u8], i: usize, n: usize) -> u64 {
    (0..n).fold(0u64, |acc, k| (acc << 8) | u64::from(u8_at(b, i + k)))
}

/// Big-endian u16 at `i`.
pub(crate) fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([u8_at(b, i), u8_at(b, i + 1)])
}

/// Big-endian u32 at `i`.
pub(crate) fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([
        u8_at(b, i),
        u8_at(b, i + 1),
        u8_at(b, i + 2),
        u8_at(b, i + 3),
    ])
}

/// Big-endian u64 at `i`.
pub(crate) fn be64(b: &[u8], i: usize) -> u64 {
    be_at(b, i, 8)
}

/// Store `v` at `i` if in range.
pub(crate) fn put(b: &mut [u8], i: usize, v: u8) {
    if let Some(slot) = b.get_mut(i) {
        *slot = v;
    }
}

/// Store the bytes of `src` starting at `i`, dropping what does not fit.
pub(crate) fn put_slice(b: &mut [u8], i: usize, src: &[u8]) {
    for (k, v) in src.iter().enumerate() {
        put(b, i + k, *v);
    }
}

/// Store a big-endian u16 at `i`.
pub(crate) fn put16(b: &mut [u8], i: usize, v: u16) {
    put_slice(b, i, &v.to_be_bytes());
}

/// Store a big-endian u32 at `i`.
pub(crate) fn put32(b: &mut [u8], i: usize, v: u32) {
    put_slice(b, i, &v.to_be_bytes());
}

/// Store a big-endian u64 at `i`.
pub(crate) fn put64(b: &mut [u8], i: usize, v: u64) {
    put_slice(b, i, &v.to_be_bytes());
}

/// `v` as a u8, saturated (for count fields).
pub(crate) fn sat8(v: usize) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

/// `v` as a u16, saturated.
pub(crate) fn sat16(v: usize) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}
