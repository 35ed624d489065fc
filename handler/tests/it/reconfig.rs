//! Reconfiguration while serving (what netlink RECONFIG_DEVICE drives): a new size is
//! announced with UNIT ATTENTION CAPACITY DATA HAS CHANGED, a write-cache change reaches MODE
//! SENSE, a new backend serves the next commands.

use std::sync::Arc;
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::{Change, DeviceConfig};
use tcmu_warden::netlink::Reconfig;
use tcmu_warden::testing::{assert_good, cdb, sense_of, Harness, LunSpec};

fn harness(dir: &std::path::Path, size: u64) -> Harness {
    let b = Arc::new(FileBackend::open(&dir.join("a.img"), size).unwrap());
    let lun = LunSpec::new(size, 512)
        .hw_max_sectors(128)
        .serial("reconfig")
        .lun_info(b.as_ref() as &dyn Backend);
    Harness::new(b, lun, EmuConfig::default(), &DeviceConfig::default())
}

fn capacity(h: &mut Harness) -> Result<u64, (u8, u8, u8)> {
    let c = h.run(&cdb::read_capacity16(32), DataDir::FromDevice(32));
    if c.status != 0 {
        return Err(sense_of(&c));
    }
    Ok(u64::from_be_bytes(c.data_in[0..8].try_into().unwrap()) + 1)
}

#[test]
fn resize_raises_one_capacity_unit_attention_then_serves_the_new_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path(), 1 << 20);
    assert_eq!(capacity(&mut h), Ok(2048));
    // Beyond the old end: refused.
    let c = h.run(&cdb::read16(3000, 1), DataDir::FromDevice(512));
    assert_eq!(sense_of(&c), (0x05, 0x21, 0x00));

    h.device().reconfigure(Change::Size(2 << 20)).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("a.img")).unwrap().len(),
        2 << 20,
        "file grown"
    );
    // INQUIRY does not consume the unit attention.
    assert_good(&h.run(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96)));
    assert_eq!(
        capacity(&mut h),
        Err((0x06, 0x2A, 0x09)),
        "CAPACITY DATA HAS CHANGED, once"
    );
    assert_eq!(capacity(&mut h), Ok(4096));
    assert_good(&h.run(&cdb::read16(3000, 1), DataDir::FromDevice(512)));
}

#[test]
fn write_cache_change_reaches_mode_sense() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path(), 1 << 20);
    let wce = |h: &mut Harness| {
        let c = h.run(&cdb::mode_sense10(0x08, 64), DataDir::FromDevice(64));
        assert_good(&c);
        // Header 8 bytes + block descriptor (length at bytes 6-7), then the caching page.
        let bd = usize::from(u16::from_be_bytes([c.data_in[6], c.data_in[7]]));
        let page = &c.data_in[8 + bd..];
        assert_eq!(page[0] & 0x3f, 0x08);
        page[2] & 0x04 != 0
    };
    assert!(wce(&mut h));
    h.device().reconfigure(Change::WriteCache(false)).unwrap();
    assert!(!wce(&mut h));
}

#[test]
fn new_backend_serves_the_next_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path(), 1 << 20);
    let other = dir.path().join("b.img");
    std::fs::write(&other, vec![0x5a; 1 << 20]).unwrap();
    let b = Arc::new(FileBackend::open(&other, 1 << 20).unwrap());
    h.device().reconfigure(Change::Backend(b)).unwrap();
    let c = h.run(&cdb::read16(7, 1), DataDir::FromDevice(512));
    assert_good(&c);
    assert!(c.data_in.iter().all(|&b| b == 0x5a));
}

/// What the daemon answers a RECONFIG_DEVICE with (its `RECONFIG_DEVICE_DONE` status): the
/// errno of what really failed, and the device keeps serving as before.
#[test]
fn refused_reconfiguration_replies_the_backends_errno() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path(), 1 << 20);
    let dev = h.dev.take().unwrap();
    // A new cfgstring whose file cannot be opened: its directory does not exist.
    let missing = dir.path().join("no-such-dir/b.img");
    let e = tcmu_warden::daemon::reconfigure(
        &dev,
        "x",
        Reconfig::DevCfg(format!("file/{}", missing.display())),
        None,
    )
    .unwrap_err();
    assert_eq!(e.errno(), -libc::ENOENT, "{e}");
    // A subtype this daemon does not serve, and a malformed cfgstring.
    let e = tcmu_warden::daemon::reconfigure(&dev, "x", Reconfig::DevCfg("tape/x".into()), None)
        .unwrap_err();
    assert_eq!(e.errno(), -libc::ENOENT, "{e}");
    let e = tcmu_warden::daemon::reconfigure(&dev, "x", Reconfig::DevCfg("file/".into()), None)
        .unwrap_err();
    assert_eq!(e.errno(), -libc::EINVAL, "{e}");
    // Accepted: a size the file backend can take.
    tcmu_warden::daemon::reconfigure(&dev, "x", Reconfig::DevSize(2 << 20), None).unwrap();
    h.dev = Some(dev);
    assert_eq!(capacity(&mut h), Err((0x06, 0x2A, 0x09)));
    assert_eq!(capacity(&mut h), Ok(4096));
}

#[test]
fn resize_refused_by_the_backend_replies_its_errno_and_keeps_the_size() {
    let b = Arc::new(tcmu_warden::backend::ram::RamBackend::new(1 << 20));
    let lun = LunSpec::new(1 << 20, 512)
        .serial("reconfig")
        .lun_info(b.as_ref() as &dyn Backend);
    let mut h = Harness::new(b, lun, EmuConfig::default(), &DeviceConfig::default());
    let e = tcmu_warden::daemon::reconfigure(
        h.dev.as_ref().unwrap(),
        "x",
        Reconfig::DevSize(2 << 20),
        None,
    )
    .unwrap_err();
    // The RAM backend cannot resize: EOPNOTSUPP, not a blanket EINVAL.
    assert_eq!(e.errno(), -libc::EOPNOTSUPP, "{e}");
    assert_eq!(
        capacity(&mut h),
        Ok(2048),
        "old size kept, no unit attention"
    );
}
