//! A long random mix of READ / WRITE / UNMAP / WRITE SAME / COMPARE AND WRITE / SYNCHRONIZE
//! CACHE at random queue depths, through the emulated ring and the real dispatcher into the
//! file backend, checked block by block against a shadow model, then the file itself checked.
//!
//! Commands in one batch touch disjoint blocks (their order is not defined), so the shadow
//! model's result is exact. `TCMU_SEED=<n>` replays a run.

// Test arithmetic on small constants: lossless casts are clearer than try_from here.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod common;

use common::{assert_good, cdbs, sense_of, Harness};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::DeviceConfig;

const BS: usize = 512;
const BLOCKS: u64 = 4096;

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
        pattern: Vec<u8>,
        unmap: bool,
        ndob: bool,
    },
    Caw {
        lba: u64,
        n: u8,
        compare: Vec<u8>,
        write: Vec<u8>,
        expect_match: bool,
    },
    Sync,
}

fn pick_range(rng: &mut StdRng, used: &mut [bool], max: u64) -> Option<(u64, u32)> {
    for _ in 0..20 {
        let n = rng.gen_range(1..=max);
        let lba = rng.gen_range(0..=BLOCKS - n);
        let r = usize::try_from(lba).unwrap()..usize::try_from(lba + n).unwrap();
        if used[r.clone()].iter().all(|u| !u) {
            used[r].iter_mut().for_each(|u| *u = true);
            return Some((lba, u32::try_from(n).unwrap()));
        }
    }
    None
}

fn span(lba: u64, n: u64) -> std::ops::Range<usize> {
    usize::try_from(lba).unwrap() * BS..usize::try_from(lba + n).unwrap() * BS
}

#[test]
fn random_mix_matches_shadow_model() {
    let seed = std::env::var("TCMU_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("TCMU_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lun.img");
    let backend = Arc::new(FileBackend::open(&path, BLOCKS * BS as u64).unwrap());
    let mut lun = tcmu_warden::daemon::lun_info(
        &tcmu_warden::configfs::DeviceAttrs {
            dev_size: BLOCKS * BS as u64,
            block_size: BS as u32,
            hw_max_sectors: 256,
            write_cache: true,
            serial: Some("integrity".into()),
            cmd_time_out: None,
            qfull_time_out: None,
        },
        backend.as_ref() as &dyn Backend,
        "x",
    );
    lun.max_compare_write_blocks = 8;
    let unmap_ok = lun.caps.unmap;
    let emu_cfg = EmuConfig {
        cmdr_size: 64 * 1024,
        data_size: 1 << 20,
        scatter: true,
        ..EmuConfig::default()
    };
    let dev_cfg = DeviceConfig {
        workers: 3,
        max_inflight: 64,
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(backend, lun, emu_cfg, &dev_cfg);
    let mut shadow = vec![0u8; BLOCKS as usize * BS];
    let mut counts = [0usize; 6];

    for _batch in 0..300 {
        let depth = rng.gen_range(1..=32);
        let mut used = vec![false; BLOCKS as usize];
        let mut ops = Vec::new();
        for _ in 0..depth {
            let kind = rng.gen_range(0..100);
            let op = match kind {
                0..=29 => pick_range(&mut rng, &mut used, 64).map(|(lba, n)| Op::Read { lba, n }),
                30..=64 => pick_range(&mut rng, &mut used, 64).map(|(lba, n)| {
                    let mut data = vec![0u8; n as usize * BS];
                    rng.fill(&mut data[..]);
                    Op::Write {
                        lba,
                        data,
                        fua: rng.gen_bool(0.2),
                    }
                }),
                65..=72 if unmap_ok => {
                    let k = rng.gen_range(1..=4);
                    let ranges: Vec<_> = (0..k)
                        .filter_map(|_| pick_range(&mut rng, &mut used, 32))
                        .collect();
                    (!ranges.is_empty()).then_some(Op::Unmap { ranges })
                }
                73..=82 => pick_range(&mut rng, &mut used, 128).map(|(lba, n)| {
                    let zero = rng.gen_bool(0.5);
                    let mut pattern = vec![0u8; BS];
                    if !zero {
                        rng.fill(&mut pattern[..]);
                    }
                    let ndob = zero && rng.gen_bool(0.3);
                    Op::WriteSame {
                        lba,
                        n,
                        pattern,
                        unmap: zero && unmap_ok && rng.gen_bool(0.5),
                        ndob,
                    }
                }),
                83..=94 => pick_range(&mut rng, &mut used, 8).map(|(lba, n)| {
                    let r = span(lba, u64::from(n));
                    let mut compare = shadow[r].to_vec();
                    let expect_match = rng.gen_bool(0.7);
                    if !expect_match {
                        let i = rng.gen_range(0..compare.len());
                        compare[i] ^= 0x5a;
                    }
                    let mut write = vec![0u8; compare.len()];
                    rng.fill(&mut write[..]);
                    Op::Caw {
                        lba,
                        n: u8::try_from(n).unwrap(),
                        compare,
                        write,
                        expect_match,
                    }
                }),
                _ => Some(Op::Sync),
            };
            ops.extend(op);
        }
        // Submit the whole batch, then collect.
        let mut ids = Vec::new();
        for op in &ops {
            let id = match op {
                Op::Read { lba, n } => h.submit(
                    &cdbs::read16(*lba, *n),
                    DataDir::FromDevice(*n as usize * BS),
                ),
                Op::Write { lba, data, fua } => h.submit(
                    &cdbs::write16(*lba, u32::try_from(data.len() / BS).unwrap(), *fua),
                    DataDir::ToDevice(data),
                ),
                Op::Unmap { ranges } => {
                    let p = cdbs::unmap_params(ranges);
                    h.submit(
                        &cdbs::unmap(u16::try_from(p.len()).unwrap()),
                        DataDir::ToDevice(&p),
                    )
                }
                Op::WriteSame {
                    lba,
                    n,
                    pattern,
                    unmap,
                    ndob,
                } => {
                    let cdb = cdbs::write_same16(*lba, *n, *unmap, *ndob);
                    if *ndob {
                        h.submit(&cdb, DataDir::None)
                    } else {
                        h.submit(&cdb, DataDir::ToDevice(pattern))
                    }
                }
                Op::Caw {
                    lba,
                    n,
                    compare,
                    write,
                    ..
                } => {
                    let mut d = compare.clone();
                    d.extend_from_slice(write);
                    h.submit(&cdbs::caw(*lba, *n), DataDir::ToDevice(&d))
                }
                Op::Sync => h.submit(&cdbs::sync16(), DataDir::None),
            };
            ids.push(id);
        }
        for (op, id) in ops.iter().zip(ids) {
            let c = h.wait(id);
            match op {
                Op::Read { lba, n } => {
                    assert_good(&c);
                    counts[0] += 1;
                    let r = span(*lba, u64::from(*n));
                    assert!(
                        c.data_in == shadow[r],
                        "READ lba {lba} n {n} differs from the shadow (seed {seed})"
                    );
                }
                Op::Write { lba, data, .. } => {
                    assert_good(&c);
                    counts[1] += 1;
                    shadow[span(*lba, (data.len() / BS) as u64)].copy_from_slice(data);
                }
                Op::Unmap { ranges } => {
                    assert_good(&c);
                    counts[2] += 1;
                    for &(lba, n) in ranges {
                        shadow[span(lba, u64::from(n))].fill(0);
                    }
                }
                Op::WriteSame {
                    lba,
                    n,
                    pattern,
                    ndob,
                    ..
                } => {
                    assert_good(&c);
                    counts[3] += 1;
                    for b in 0..u64::from(*n) {
                        let r = span(lba + b, 1);
                        if *ndob {
                            shadow[r].fill(0)
                        } else {
                            shadow[r].copy_from_slice(pattern)
                        }
                    }
                }
                Op::Caw {
                    lba,
                    n,
                    compare,
                    write,
                    expect_match,
                } => {
                    counts[4] += 1;
                    let r = span(*lba, u64::from(*n));
                    if *expect_match {
                        assert_good(&c);
                        shadow[r].copy_from_slice(write);
                    } else {
                        assert_eq!(c.status, 2, "CAW miscompare must be CHECK CONDITION");
                        assert_eq!(
                            sense_of(&c),
                            (0x0E, 0x1D, 0x00),
                            "MISCOMPARE DURING VERIFY OPERATION"
                        );
                        let first = compare
                            .iter()
                            .zip(&shadow[r])
                            .position(|(a, b)| a != b)
                            .unwrap();
                        let s = tcmu_scsi::sense::Sense::from_bytes(&c.sense).unwrap();
                        assert_eq!(
                            s.info,
                            Some(first as u64),
                            "INFORMATION = offset of the first miscompare"
                        );
                    }
                }
                Op::Sync => {
                    assert_good(&c);
                    counts[5] += 1;
                }
            }
        }
    }
    // Whole-LUN read back through the ring, then the file itself.
    for lba in (0..BLOCKS).step_by(256) {
        let c = h.run(&cdbs::read16(lba, 256), DataDir::FromDevice(256 * BS));
        assert_good(&c);
        assert!(
            c.data_in == shadow[span(lba, 256)],
            "final read of lba {lba} differs (seed {seed})"
        );
    }
    h.stop();
    assert_eq!(h.emu.outstanding(), 0, "every command completed");
    let on_disk = std::fs::read(&path).unwrap();
    assert!(
        on_disk == shadow,
        "file contents differ from the shadow model (seed {seed})"
    );
    eprintln!(
        "reads {} writes {} unmaps {} write-sames {} caws {} syncs {}",
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
    );
    assert!(
        counts.iter().all(|&n| n > 0) || !unmap_ok,
        "every kind of command was exercised: {counts:?}"
    );
}
