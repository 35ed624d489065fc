//! The outlier log: a slow command is kept with its per-stage times; fast ones are not.

use std::sync::Arc;
use std::time::Duration;
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::io::Io;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::{Backend, IoOp};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, Harness};

/// RAM backend that takes 600 ms for READs of LBA 0. The margins (threshold 300 ms, other
/// stages under 250 ms) are wide so that a loaded host does not make a fast READ an outlier.
struct SlowBlockZero(RamBackend);

impl Backend for SlowBlockZero {
    fn describe(&self) -> String {
        "slow-lba0".into()
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn submit(&self, io: Io) {
        if io.op() == IoOp::Read && io.offset() == 0 {
            std::thread::sleep(Duration::from_millis(600));
        }
        self.0.submit(io);
    }
}

#[test]
fn a_slow_command_is_kept_with_its_stages() {
    let lun = tcmu_scsi::lun::LunInfo::new(512, 2048, "outliers");
    let cfg = DeviceConfig {
        outlier_threshold: Some(Duration::from_millis(300)),
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(
        Arc::new(SlowBlockZero(RamBackend::new(1 << 20))),
        lun,
        EmuConfig::default(),
        &cfg,
    );
    for lba in 1..50 {
        assert_good(&h.run(&cdb::read16(lba, 1), DataDir::FromDevice(512)));
    }
    let stats = Arc::clone(&h.device().stats);
    assert_eq!(stats.outliers(), 0, "fast commands are not outliers");
    let c = h.run(&cdb::read16(0, 1), DataDir::FromDevice(512));
    assert_good(&c);
    assert_eq!(stats.outliers(), 1);
    let o = stats.recent_outliers.snapshot();
    assert_eq!(o.len(), 1);
    let o = o[0];
    assert_eq!(
        (o.cmd_id, o.opcode, o.lba, o.bytes, o.status),
        (c.cmd_id, 0x88, 0, 512, 0)
    );
    assert!(
        o.backend >= Duration::from_millis(600),
        "the time is attributed to the backend: {o:?}"
    );
    assert!(
        o.handler < Duration::from_millis(250) && o.publish < Duration::from_millis(250),
        "{o:?}"
    );
}
