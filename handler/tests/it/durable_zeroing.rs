//! Zeroing is durable when the write cache is off (issue "the daemon never stalls", item 11):
//! with LBPRZ=1 an unmapped block must read back as zeros after a power loss too, so UNMAP
//! and zeroing WRITE SAME reach the backend as durable operations (`fua`) while
//! `emulate_write_cache` is 0, and as ordinary ones while it is 1. The backends turn `fua`
//! into a sync (`backend/file.rs` tests it; gfapi gets an fdatasync, librbd's cache is off).

use parking_lot::Mutex;
use std::sync::Arc;
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::{Backend, Caps, Io, IoOp};
use tcmu_warden::device::{Change, DeviceConfig};
use tcmu_warden::testing::{assert_good, cdb, Harness, LunSpec};

/// A RAM backend that can unmap and records every operation it gets.
struct Recording {
    ram: RamBackend,
    ops: Mutex<Vec<IoOp>>,
}

impl Backend for Recording {
    fn describe(&self) -> String {
        "recording".into()
    }
    fn size(&self) -> u64 {
        self.ram.size()
    }
    fn caps(&self) -> Caps {
        Caps {
            unmap: true,
            write_zeroes: true,
            thin: true,
            non_rotational: true,
        }
    }
    fn submit(&self, io: Io) {
        self.ops.lock().push(io.op());
        self.ram.submit(io);
    }
}

fn zeroing_ops(h: &mut Harness, b: &Recording) -> Vec<IoOp> {
    b.ops.lock().clear();
    let list = cdb::unmap_params(&[(8, 4), (100, 2)]);
    let len = u16::try_from(list.len()).unwrap();
    assert_good(&h.run(&cdb::unmap(len), DataDir::ToDevice(&list)));
    let zero = vec![0u8; 512];
    assert_good(&h.run(
        &cdb::write_same16(200, 8, false, false),
        DataDir::ToDevice(&zero),
    ));
    assert_good(&h.run(
        &cdb::write_same16(300, 8, true, false),
        DataDir::ToDevice(&zero),
    ));
    b.ops.lock().clone()
}

#[test]
fn unmap_and_zeroing_write_same_are_durable_exactly_when_the_write_cache_is_off() {
    let b = Arc::new(Recording {
        ram: RamBackend::new(1 << 20),
        ops: Mutex::new(Vec::new()),
    });
    let lun = LunSpec::blocks(2048, 512)
        .write_cache(false)
        .lun_info(b.as_ref() as &dyn Backend);
    let mut h = Harness::new(
        Arc::clone(&b) as Arc<dyn Backend>,
        lun,
        EmuConfig::default(),
        &DeviceConfig::default(),
    );
    let off = zeroing_ops(&mut h, &b);
    assert_eq!(
        off,
        vec![
            IoOp::Unmap { fua: true },
            IoOp::Unmap { fua: true },
            IoOp::WriteZeroes {
                unmap: false,
                fua: true
            },
            IoOp::Unmap { fua: true },
        ],
        "write cache off: every zeroing is durable"
    );
    h.device().reconfigure(Change::WriteCache(true)).unwrap();
    // The change is announced (MODE PARAMETERS CHANGED) to the next command.
    let c = h.run(&cdb::test_unit_ready(), DataDir::None);
    assert_eq!(tcmu_warden::testing::sense_of(&c), (0x06, 0x2A, 0x01));
    let on = zeroing_ops(&mut h, &b);
    assert!(
        !on.is_empty() && on.iter().all(|op| !op.is_fua()),
        "write cache on: none is forced to stable storage: {on:?}"
    );
}
