//! A RAM backend: the LUN lives in memory. Used by the micro-benchmarks (so they measure the
//! handler, not a disk) and by tests. Memory is split in chunks with their own locks so
//! workers touching different regions never contend.

use super::io::{Io, IoOp, IoResult};
use super::{Backend, Caps};
use nix::errno::Errno;
use parking_lot::RwLock;

const CHUNK: u64 = 1 << 20;

/// An in-memory LUN of fixed size. Unmapped ranges read as zeros.
pub struct RamBackend {
    chunks: Vec<RwLock<Box<[u8]>>>,
    size: u64,
}

impl RamBackend {
    /// A zeroed LUN of `size` bytes.
    #[must_use]
    pub fn new(size: u64) -> RamBackend {
        let n = size.div_ceil(CHUNK);
        let chunks = (0..n)
            .map(|i| {
                let len = CHUNK.min(size - i * CHUNK);
                RwLock::new(vec![0u8; usize::try_from(len).unwrap_or(0)].into_boxed_slice())
            })
            .collect();
        RamBackend { chunks, size }
    }

    /// Walk `[off, off+len)` chunk by chunk: `f(chunk index, offset in chunk, bytes)`.
    fn each_chunk(&self, off: u64, len: u64, mut f: impl FnMut(usize, usize, usize)) -> IoResult {
        if !off.checked_add(len).is_some_and(|end| end <= self.size) {
            return Err(Errno::EINVAL);
        }
        let mut pos = off;
        while pos < off + len {
            let idx = usize::try_from(pos / CHUNK).map_err(|_| Errno::EINVAL)?;
            let within = pos % CHUNK;
            let n = (CHUNK - within).min(off + len - pos);
            f(
                idx,
                usize::try_from(within).map_err(|_| Errno::EINVAL)?,
                usize::try_from(n).map_err(|_| Errno::EINVAL)?,
            );
            pos += n;
        }
        Ok(())
    }

    fn copy(&self, io: &Io, to_iov: bool) -> IoResult {
        let iov = io.buffers();
        let mut done = 0usize;
        self.each_chunk(io.offset(), io.len(), |c, within, n| {
            if to_iov {
                done += iov.copy_from_slice(done, &self.chunks[c].read()[within..within + n]);
            } else {
                done += iov.copy_to_slice(done, &mut self.chunks[c].write()[within..within + n]);
            }
        })
    }

    fn zero(&self, off: u64, len: u64) -> IoResult {
        self.each_chunk(off, len, |c, within, n| {
            self.chunks[c].write()[within..within + n].fill(0)
        })
    }
}

impl Backend for RamBackend {
    fn describe(&self) -> String {
        format!("ram:{}", self.size)
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn caps(&self) -> Caps {
        Caps {
            unmap: true,
            write_zeroes: true,
            thin: false,
            non_rotational: true,
        }
    }

    fn submit(&self, io: Io) {
        let r = match io.op() {
            IoOp::Read => self.copy(&io, true),
            IoOp::Write { .. } => self.copy(&io, false),
            IoOp::Flush => Ok(()),
            IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => self.zero(io.offset(), io.len()),
            // Not offered (`atomic_compare_and_write` is false): the device's generic path.
            IoOp::CompareAndWrite { .. } => Err(nix::errno::Errno::EOPNOTSUPP),
        };
        io.complete(r);
    }
}
