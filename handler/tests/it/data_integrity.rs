//! A long random mix of READ / WRITE / UNMAP / WRITE SAME / COMPARE AND WRITE / SYNCHRONIZE
//! CACHE at random queue depths, through the emulated ring and the real dispatcher into the
//! file backend, checked block by block against the shadow model
//! (`tcmu_warden::testing::shadow`), then the file itself checked. `TCMU_SEED=<n>` replays a
//! run.

use std::sync::Arc;
use tcmu_ring::emu::EmuConfig;
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::shadow::{seed_from_env, Mix, Shadow, Share};
use tcmu_warden::testing::{Harness, LunSpec};

const BS: u32 = 512;
const BLOCKS: u64 = 4096;

#[test]
fn random_mix_matches_shadow_model() {
    let seed = seed_from_env();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lun.img");
    let backend = Arc::new(FileBackend::open(&path, BLOCKS * u64::from(BS)).unwrap());
    let mut lun = LunSpec::blocks(BLOCKS, BS)
        .serial("integrity")
        .lun_info(backend.as_ref());
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
    // Without hole punching in the temp dir's filesystem, UNMAP's share goes to SYNCHRONIZE
    // CACHE.
    let mix = Mix {
        batches: 300,
        max_depth: 32,
        read: Share::new(30, 64),
        write: Share::new(35, 64),
        unmap: if unmap_ok {
            Share::new(8, 32)
        } else {
            Share::NONE
        },
        write_same: Share::new(10, 128),
        caw: Share::new(12, 8),
        sync: Share::new(if unmap_ok { 5 } else { 13 }, 0),
        fua: 0.2,
        unmap_ranges: 4,
        write_same_data: true,
        write_same_unmap: unmap_ok,
        ndob: true,
        boundary: None,
    };
    let mut shadow = Shadow::new(BLOCKS, BS as usize);
    let counts = shadow.run_mix(&mut h, &mix, seed);
    // Whole-LUN read back through the ring, then the file itself.
    shadow.assert_reads_back(&mut h, 256, &format!("seed {seed}"));
    h.stop();
    assert_eq!(h.emu.outstanding(), 0, "every command completed");
    let on_disk = std::fs::read(&path).unwrap();
    assert!(
        on_disk == shadow.bytes(),
        "file contents differ from the shadow model (seed {seed})"
    );
    eprintln!("{counts:?}");
    assert!(
        counts.covers(&mix),
        "every kind of command was exercised: {counts:?}"
    );
}
