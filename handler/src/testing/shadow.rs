//! One shadow model for every backend's integrity test (file, RAM, rbd, glfs): a random mix
//! of READ, WRITE, UNMAP, WRITE SAME, COMPARE AND WRITE and SYNCHRONIZE CACHE at random
//! queue depths goes through a [`Harness`], and every completion is checked against an
//! in-memory copy of what the LUN must hold.
//!
//! Commands in one batch touch disjoint blocks (their order is not defined), so the model's
//! result is exact: a READ must return the model's bytes, a COMPARE AND WRITE must succeed
//! exactly when its compare data equal the model, and otherwise fail with MISCOMPARE whose
//! INFORMATION is the offset of the first difference. A run is replayed with
//! `TCMU_SEED=<n>` (see [`seed_from_env`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tcmu_ring::emu::DataDir;

use super::cdb;
use super::harness::{assert_good, sense_of, Harness};

/// MISCOMPARE DURING VERIFY OPERATION.
const MISCOMPARE: (u8, u8, u8) = (0x0E, 0x1D, 0x00);

/// One command kind in a [`Mix`]: how often (a weight among the kinds' weights; 0: never) and
/// how many blocks at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Relative frequency.
    pub weight: u32,
    /// Longest range in blocks (at least 1).
    pub max_blocks: u32,
}

impl Share {
    /// Never sent.
    pub const NONE: Share = Share {
        weight: 0,
        max_blocks: 1,
    };

    /// `weight`, ranges of 1 to `max_blocks` blocks.
    #[must_use]
    pub const fn new(weight: u32, max_blocks: u32) -> Share {
        Share { weight, max_blocks }
    }
}

/// What a random run sends.
#[derive(Debug, Clone)]
pub struct Mix {
    /// Batches; each is submitted whole, then collected.
    pub batches: usize,
    /// Commands per batch: 1 to this many (fewer when no disjoint range is found).
    pub max_depth: usize,
    /// READ(16).
    pub read: Share,
    /// WRITE(16).
    pub write: Share,
    /// UNMAP.
    pub unmap: Share,
    /// WRITE SAME(16).
    pub write_same: Share,
    /// COMPARE AND WRITE (at most the LUN's `max_compare_write_blocks`, and 255).
    pub caw: Share,
    /// SYNCHRONIZE CACHE(16) (its `max_blocks` is not used).
    pub sync: Share,
    /// Share of WRITEs sent with FUA.
    pub fua: f64,
    /// Descriptors per UNMAP: 1 to this many.
    pub unmap_ranges: u32,
    /// WRITE SAME of a random block half of the time (otherwise always a zero block).
    pub write_same_data: bool,
    /// WRITE SAME of zeros sets UNMAP half of the time (the LUN must support UNMAP).
    pub write_same_unmap: bool,
    /// WRITE SAME of zeros uses NDOB (no Data-Out) 30% of the time.
    pub ndob: bool,
    /// Half of the ranges are put across a multiple of this many blocks (an RBD object
    /// boundary, say).
    pub boundary: Option<u64>,
}

/// Commands of each kind a run completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// READs.
    pub reads: usize,
    /// WRITEs.
    pub writes: usize,
    /// UNMAPs.
    pub unmaps: usize,
    /// WRITE SAMEs.
    pub write_sames: usize,
    /// COMPARE AND WRITEs.
    pub caws: usize,
    /// SYNCHRONIZE CACHEs.
    pub syncs: usize,
}

impl Counts {
    /// Whether every kind the mix sends was sent at least once.
    #[must_use]
    pub fn covers(&self, mix: &Mix) -> bool {
        [
            (mix.read, self.reads),
            (mix.write, self.writes),
            (mix.unmap, self.unmaps),
            (mix.write_same, self.write_sames),
            (mix.caw, self.caws),
            (mix.sync, self.syncs),
        ]
        .iter()
        .all(|(share, n)| share.weight == 0 || *n > 0)
    }
}

/// `TCMU_SEED` if set, else a random seed; printed either way, so a failure can be replayed.
#[must_use]
pub fn seed_from_env() -> u64 {
    let seed = std::env::var("TCMU_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("TCMU_SEED={seed}");
    seed
}

fn usz(v: u64) -> usize {
    usize::try_from(v).expect("test sizes fit in usize")
}

/// One generated command.
enum Op {
    Read {
        lba: u64,
        n: u32,
    },
    Write {
        lba: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Unmap {
        ranges: Vec<(u64, u32)>,
    },
    WriteSame {
        lba: u64,
        n: u32,
        block: Vec<u8>,
        unmap: bool,
        ndob: bool,
    },
    Caw {
        lba: u64,
        n: u8,
        data: Vec<u8>,
    },
    Sync,
}

/// What a LUN must hold.
#[derive(Debug, Clone)]
pub struct Shadow {
    data: Vec<u8>,
    block_size: usize,
}

impl Shadow {
    /// A LUN of `blocks` zeroed blocks of `block_size` bytes.
    #[must_use]
    pub fn new(blocks: u64, block_size: usize) -> Shadow {
        Shadow {
            data: vec![0; usz(blocks) * block_size],
            block_size,
        }
    }

    /// Blocks in the LUN.
    #[must_use]
    pub fn blocks(&self) -> u64 {
        (self.data.len() / self.block_size) as u64
    }

    /// Every byte of the LUN.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    fn span(&self, lba: u64, n: u64) -> std::ops::Range<usize> {
        usz(lba) * self.block_size..usz(lba + n) * self.block_size
    }

    /// The bytes of `n` blocks at `lba`.
    #[must_use]
    pub fn range(&self, lba: u64, n: u64) -> &[u8] {
        &self.data[self.span(lba, n)]
    }

    /// Record a write of `data` (whole blocks) at `lba`.
    pub fn write(&mut self, lba: u64, data: &[u8]) {
        let n = (data.len() / self.block_size) as u64;
        let r = self.span(lba, n);
        self.data[r].copy_from_slice(data);
    }

    /// Record that `n` blocks at `lba` read as zeros now (UNMAP, WRITE SAME of zeros).
    pub fn zero(&mut self, lba: u64, n: u64) {
        let r = self.span(lba, n);
        self.data[r].fill(0);
    }

    /// Read the whole LUN through `h`, `step` blocks per READ, and compare with the model.
    ///
    /// # Panics
    /// If a READ fails or returns other bytes; `what` names the run in the message.
    pub fn assert_reads_back(&self, h: &mut Harness, step: u32, what: &str) {
        let blocks = self.blocks();
        let mut lba = 0;
        while lba < blocks {
            let n = u64::from(step).min(blocks - lba);
            let n32 = u32::try_from(n).unwrap_or(step);
            let c = h.run(
                &cdb::read16(lba, n32),
                DataDir::FromDevice(usz(n) * self.block_size),
            );
            assert_good(&c);
            let want = self.range(lba, n);
            let first = c.data_in.iter().zip(want).position(|(a, b)| a != b);
            assert!(
                c.data_in.len() == want.len() && first.is_none(),
                "{what}: final read of lba {lba} (+{n}) differs from the shadow at byte {first:?}"
            );
            lba += n;
        }
    }

    /// Run `mix` through `h` with the random stream `seed`, checking every completion.
    ///
    /// # Panics
    /// On any difference from the model (the message names the seed).
    pub fn run_mix(&mut self, h: &mut Harness, mix: &Mix, seed: u64) -> Counts {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = Counts::default();
        let mut used = vec![false; usz(self.blocks())];
        for _ in 0..mix.batches {
            used.fill(false);
            let depth = rng.gen_range(1..=mix.max_depth.max(1));
            let ops: Vec<Op> = (0..depth)
                .filter_map(|_| self.gen_op(&mut rng, mix, &mut used))
                .collect();
            let ids: Vec<u16> = ops.iter().map(|op| self.submit(h, op)).collect();
            for (op, id) in ops.iter().zip(ids) {
                let c = h.wait(id);
                self.check(op, &c, &mut counts, seed);
            }
        }
        counts
    }

    /// A free range of 1 to `max` blocks, marked used; `None` if none was found quickly.
    fn pick(&self, rng: &mut StdRng, mix: &Mix, used: &mut [bool], max: u32) -> Option<(u64, u32)> {
        let blocks = self.blocks();
        for _ in 0..20 {
            let n = rng.gen_range(1..=u64::from(max.max(1)).min(blocks));
            let lba = match mix.boundary {
                Some(b) if b < blocks && rng.gen_bool(0.5) => {
                    let k = rng.gen_range(1..=(blocks - 1) / b);
                    (k * b).saturating_sub(rng.gen_range(0..n)).min(blocks - n)
                }
                _ => rng.gen_range(0..=blocks - n),
            };
            let r = usz(lba)..usz(lba + n);
            if used[r.clone()].iter().all(|u| !u) {
                used[r].fill(true);
                return Some((lba, u32::try_from(n).ok()?));
            }
        }
        None
    }

    fn gen_op(&self, rng: &mut StdRng, mix: &Mix, used: &mut [bool]) -> Option<Op> {
        let shares = [
            mix.read,
            mix.write,
            mix.unmap,
            mix.write_same,
            mix.caw,
            mix.sync,
        ];
        let total: u32 = shares.iter().map(|s| s.weight).sum();
        let mut k = rng.gen_range(0..total.max(1));
        let kind = shares.iter().position(|s| {
            let hit = k < s.weight;
            k = k.saturating_sub(s.weight);
            hit
        })?;
        let bs = self.block_size;
        let op = match kind {
            0 => {
                let (lba, n) = self.pick(rng, mix, used, mix.read.max_blocks)?;
                Op::Read { lba, n }
            }
            1 => {
                let (lba, n) = self.pick(rng, mix, used, mix.write.max_blocks)?;
                let mut data = vec![0u8; usz(n.into()) * bs];
                rng.fill(&mut data[..]);
                Op::Write {
                    lba,
                    data,
                    fua: rng.gen_bool(mix.fua),
                }
            }
            2 => {
                let k = rng.gen_range(1..=mix.unmap_ranges.max(1));
                let ranges: Vec<_> = (0..k)
                    .filter_map(|_| self.pick(rng, mix, used, mix.unmap.max_blocks))
                    .collect();
                if ranges.is_empty() {
                    return None;
                }
                Op::Unmap { ranges }
            }
            3 => {
                let (lba, n) = self.pick(rng, mix, used, mix.write_same.max_blocks)?;
                let mut block = vec![0u8; bs];
                let zero = !mix.write_same_data || rng.gen_bool(0.5);
                if !zero {
                    rng.fill(&mut block[..]);
                }
                Op::WriteSame {
                    lba,
                    n,
                    block,
                    unmap: zero && mix.write_same_unmap && rng.gen_bool(0.5),
                    ndob: zero && mix.ndob && rng.gen_bool(0.3),
                }
            }
            4 => {
                let max = mix.caw.max_blocks.min(255);
                let (lba, n) = self.pick(rng, mix, used, max)?;
                let mut data = self.range(lba, n.into()).to_vec();
                if !rng.gen_bool(0.7) {
                    let i = rng.gen_range(0..data.len());
                    data[i] ^= 0x5a;
                }
                let mut write = vec![0u8; data.len()];
                rng.fill(&mut write[..]);
                data.extend_from_slice(&write);
                Op::Caw {
                    lba,
                    n: u8::try_from(n).ok()?,
                    data,
                }
            }
            _ => Op::Sync,
        };
        Some(op)
    }

    fn submit(&self, h: &mut Harness, op: &Op) -> u16 {
        match op {
            Op::Read { lba, n } => h.submit(
                &cdb::read16(*lba, *n),
                DataDir::FromDevice(usz((*n).into()) * self.block_size),
            ),
            Op::Write { lba, data, fua } => {
                let n = u32::try_from(data.len() / self.block_size).unwrap_or(u32::MAX);
                h.submit(&cdb::write16(*lba, n, *fua), DataDir::ToDevice(data))
            }
            Op::Unmap { ranges } => {
                let p = cdb::unmap_params(ranges);
                let len = u16::try_from(p.len()).expect("UNMAP parameter list length");
                h.submit(&cdb::unmap(len), DataDir::ToDevice(&p))
            }
            Op::WriteSame {
                lba,
                n,
                block,
                unmap,
                ndob,
            } => {
                let c = cdb::write_same16(*lba, *n, *unmap, *ndob);
                if *ndob {
                    h.submit(&c, DataDir::None)
                } else {
                    h.submit(&c, DataDir::ToDevice(block))
                }
            }
            Op::Caw { lba, n, data } => h.submit(&cdb::caw(*lba, *n), DataDir::ToDevice(data)),
            Op::Sync => h.submit(&cdb::sync16(), DataDir::None),
        }
    }

    fn check(&mut self, op: &Op, c: &tcmu_ring::emu::Completed, counts: &mut Counts, seed: u64) {
        match op {
            Op::Read { lba, n } => {
                assert_good(c);
                counts.reads += 1;
                assert!(
                    c.data_in == self.range(*lba, (*n).into()),
                    "READ lba {lba} n {n} differs from the shadow (seed {seed})"
                );
            }
            Op::Write { lba, data, .. } => {
                assert_good(c);
                counts.writes += 1;
                self.write(*lba, data);
            }
            Op::Unmap { ranges } => {
                assert_good(c);
                counts.unmaps += 1;
                for &(lba, n) in ranges {
                    self.zero(lba, n.into());
                }
            }
            Op::WriteSame { lba, n, block, .. } => {
                assert_good(c);
                counts.write_sames += 1;
                for b in 0..u64::from(*n) {
                    self.write(lba + b, block);
                }
            }
            Op::Caw { lba, n, data } => {
                counts.caws += 1;
                let (compare, write) = data.split_at(data.len() / 2);
                let now = self.range(*lba, (*n).into());
                match compare.iter().zip(now).position(|(a, b)| a != b) {
                    None => {
                        assert_good(c);
                        self.write(*lba, write);
                    }
                    Some(first) => {
                        assert_eq!(
                            c.status, 2,
                            "CAW miscompare must be CHECK CONDITION (seed {seed})"
                        );
                        assert_eq!(
                            sense_of(c),
                            MISCOMPARE,
                            "MISCOMPARE DURING VERIFY OPERATION (seed {seed})"
                        );
                        let s = tcmu_scsi::sense::Sense::from_bytes(&c.sense)
                            .expect("fixed-format sense");
                        assert_eq!(
                            s.info,
                            Some(first as u64),
                            "INFORMATION = offset of the first miscompare (seed {seed})"
                        );
                    }
                }
            }
            Op::Sync => {
                assert_good(c);
                counts.syncs += 1;
            }
        }
    }
}
