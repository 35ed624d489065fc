//! Reconfiguration while serving (what netlink RECONFIG_DEVICE drives): a new size is
//! announced with UNIT ATTENTION CAPACITY DATA HAS CHANGED, a write-cache change with MODE
//! PARAMETERS CHANGED and reaches MODE SENSE, a new backend serves the next commands (the old
//! one closed once its operations returned).

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
    // The same value changes nothing: no UNIT ATTENTION.
    h.device().reconfigure(Change::WriteCache(true)).unwrap();
    assert!(wce(&mut h));
    h.device().reconfigure(Change::WriteCache(false)).unwrap();
    // INQUIRY does not take it; the next command that can does, once.
    assert_good(&h.run(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96)));
    let c = h.run(&cdb::mode_sense10(0x08, 64), DataDir::FromDevice(64));
    assert_eq!(
        sense_of(&c),
        (0x06, 0x2A, 0x01),
        "MODE PARAMETERS CHANGED, as for a MODE SELECT"
    );
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

/// A new cfgstring replaces a backend that still has a write out (hung): the swap is
/// immediate (the next command is served by the new backend at once, no lock waits for the
/// old one's close), the hung write is completed at its deadline with a retryable status and
/// its buffer kept, and the old backend stays open until that write returns, then closes.
/// Dropping it at the swap would let its drop complete (or release) the write while a
/// library could still be writing into the buffer.
#[test]
fn a_replaced_backend_closes_only_after_its_operations_returned() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
    use tcmu_warden::backend::ram::RamBackend;
    use tcmu_warden::device::FreeKeptBuf;

    let ram = Arc::new(RamBackend::new(1 << 20));
    let old = Arc::new(FaultBackend::new(
        ram as Arc<dyn Backend>,
        parse_rules("write:hang").unwrap(),
    ));
    let weak = Arc::downgrade(&old);
    let freed = Arc::new(AtomicUsize::new(0));
    let f2 = Arc::clone(&freed);
    let cfg = DeviceConfig {
        command_deadline: Some(Duration::from_millis(300)),
        free_kept_buf: Some(FreeKeptBuf(Arc::new(move |_| {
            f2.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))),
        stop_deadline: Duration::from_millis(500),
        ..DeviceConfig::default()
    };
    let lun = LunSpec::new(1 << 20, 512).lun_info(old.as_ref() as &dyn Backend);
    let mut h = Harness::new(old, lun, EmuConfig::default(), &cfg);
    let block = vec![0x77u8; 512];
    let id = h.submit(&cdb::write16(5, 1, false), DataDir::ToDevice(&block));
    tcmu_warden::testing::wait_until("the write hangs", Duration::from_secs(5), || {
        weak.upgrade().is_some_and(|f| f.hung() == 1)
    });

    let new = Arc::new(RamBackend::new(1 << 20));
    let t = Instant::now();
    h.device().reconfigure(Change::Backend(new)).unwrap();
    assert!(t.elapsed() < Duration::from_millis(100), "the swap waited");
    let c = h.run(&cdb::read16(9, 1), DataDir::FromDevice(512));
    assert_good(&c);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "the new backend served at once"
    );

    let c = h.wait(id);
    assert_eq!(
        sense_of(&c),
        (0x02, 0x04, 0x0A),
        "completed at its deadline, retryably, not by the old backend's close"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        weak.upgrade().is_some(),
        "the old backend stays open past the close bound while its write is out"
    );
    assert_eq!(
        freed.load(Ordering::SeqCst),
        0,
        "the kept buffer is not freed yet"
    );

    // The write returns: the buffer is freed, and the old backend closes.
    assert_eq!(weak.upgrade().unwrap().release_hung(), 1);
    tcmu_warden::testing::wait_until("the old backend closed", Duration::from_secs(5), || {
        weak.upgrade().is_none()
    });
    tcmu_warden::testing::wait_until("the kept buffer freed", Duration::from_secs(5), || {
        h.pump(Duration::from_millis(10));
        freed.load(Ordering::SeqCst) == 1
    });
}

/// A MODE SELECT that changes WCE: in force at once, announced with MODE PARAMETERS CHANGED
/// (once, to the next command that can take it), and persisted in the LUN's
/// `attrib/emulate_write_cache`, which a restart reads back. The RECONFIG the kernel sends for
/// that write carries the value in force and raises nothing more; a MODE SELECT that
/// changes nothing raises nothing and persists nothing.
#[test]
fn mode_select_write_cache_is_announced_and_persisted_in_configfs() {
    use std::time::Duration;
    use tcmu_warden::daemon::write_cache::Persister;
    use tcmu_warden::device::PersistWriteCache;

    let dir = tempfile::tempdir().unwrap();
    let dev_dir = dir.path().join("core/user_0/lun0");
    std::fs::create_dir_all(dev_dir.join("attrib")).unwrap();
    for (f, v) in [
        ("dev_size", "1048576\n"),
        ("hw_block_size", "512\n"),
        ("emulate_write_cache", "1\n"),
    ] {
        std::fs::write(dev_dir.join("attrib").join(f), v).unwrap();
    }
    let attr = dev_dir.join("attrib/emulate_write_cache");
    let p = Persister::start().unwrap();
    let (p2, d2) = (p.clone(), dev_dir.clone());
    let cfg = DeviceConfig {
        persist_write_cache: Some(PersistWriteCache(Arc::new(move |on| p2.persist(&d2, on)))),
        ..DeviceConfig::default()
    };
    let b = Arc::new(tcmu_warden::backend::ram::RamBackend::new(1 << 20));
    let attrs = tcmu_warden::configfs::read(&dev_dir).unwrap();
    let lun = tcmu_warden::daemon::lun_info(&attrs, b.as_ref(), "x");
    assert!(lun.write_cache);
    let mut h = Harness::new(b, lun, EmuConfig::default(), &cfg);

    let page = |wce: bool| {
        let mut params = vec![0u8; 8];
        let mut p = [0u8; 20];
        p[0] = 0x08;
        p[1] = 0x12;
        if wce {
            p[2] = 0x04;
        }
        params.extend_from_slice(&p);
        params
    };
    let select = |h: &mut Harness, wce: bool| {
        let params = page(wce);
        h.run(
            &cdb::mode_select10(u16::try_from(params.len()).unwrap()),
            DataDir::ToDevice(&params),
        )
    };
    // Unchanged: nothing to announce or persist.
    assert_good(&select(&mut h, true));
    assert_good(&h.run(&cdb::test_unit_ready(), DataDir::None));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.busy(), 0);
    assert_eq!(std::fs::read_to_string(&attr).unwrap(), "1\n");

    // Off: announced once, persisted.
    assert_good(&select(&mut h, false));
    let c = h.run(&cdb::test_unit_ready(), DataDir::None);
    assert_eq!(sense_of(&c), (0x06, 0x2A, 0x01), "MODE PARAMETERS CHANGED");
    assert_good(&h.run(&cdb::test_unit_ready(), DataDir::None));
    tcmu_warden::testing::wait_until("persisted", Duration::from_secs(5), || {
        std::fs::read_to_string(&attr).is_ok_and(|v| v == "0\n")
    });
    // The kernel's RECONFIG for that write: the same value, nothing more to announce.
    h.device().reconfigure(Change::WriteCache(false)).unwrap();
    assert_good(&h.run(&cdb::test_unit_ready(), DataDir::None));
    // What a restart reads.
    let again = tcmu_warden::configfs::read(&dev_dir).unwrap();
    assert!(!again.write_cache, "a restart serves the write cache off");
}
