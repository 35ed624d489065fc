//! Implicit ALUA through the emulated ring and the real dispatcher: the LUN's target port
//! groups come from a fake configfs tree in a temporary directory (laid out as LIO's), read
//! by `configfs::read_alua` when the device opens and again on REPORT TARGET PORT GROUPS,
//! INQUIRY and at most `ALUA_REFRESH` after the last read for other commands. An admin's
//! `echo 2 > alua/gp2/alua_access_state` must show up in RTPG at once and stop READs with
//! NOT READY 04/0B within `ALUA_REFRESH`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_scsi::lun::LunInfo;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::configfs;
use tcmu_warden::device::{AluaSource, DeviceConfig, ALUA_REFRESH};
use tcmu_warden::testing::{assert_good, cdb, sense_of, Harness};

const CHECK_CONDITION: u8 = 0x02;
const STANDBY: (u8, u8, u8) = (0x02, 0x04, 0x0B);
const UNAVAILABLE: (u8, u8, u8) = (0x02, 0x04, 0x0C);
const TRANSITIONING: (u8, u8, u8) = (0x02, 0x04, 0x0A);

fn write(path: &Path, v: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, v).unwrap();
}

/// A fake `alua/<name>/` group with LIO's defaults.
fn group(dev: &Path, name: &str, id: u16, state: u8, members: &str) {
    let g = dev.join("alua").join(name);
    for (f, v) in [
        ("tg_pt_gp_id", format!("{id}\n")),
        ("alua_access_state", format!("{state}\n")),
        ("alua_access_status", "None\n".into()),
        ("alua_access_type", "Implicit and Explicit\n".into()),
        ("alua_support_transitioning", "1\n".into()),
        ("alua_support_offline", "1\n".into()),
        ("alua_support_lba_dependent", "0\n".into()),
        ("alua_support_unavailable", "1\n".into()),
        ("alua_support_standby", "1\n".into()),
        ("alua_support_active_nonoptimized", "1\n".into()),
        ("alua_support_active_optimized", "1\n".into()),
        ("preferred", "0\n".into()),
        ("implicit_trans_secs", "0\n".into()),
        ("members", members.into()),
    ] {
        write(&g.join(f), &v);
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    dev: PathBuf,
    h: Harness,
}

const MEMBER: &str = "loopback/naa.5001405000000001/tpgt_1/lun_0\n";

/// The LUN exported through one tcm_loop port (RTPI 1): in `default_tg_pt_gp`, or moved to
/// `gp2` (id 2) in `state`.
fn rig(in_gp2: Option<u8>) -> Rig {
    rig_read_at_open(in_gp2, true)
}

/// As [`rig`]; with `read_at_open` false the groups are left to the device, as the daemon
/// does (docs/DESIGN.md, "Device lifecycle"): the `LunInfo` has none.
fn rig_read_at_open(in_gp2: Option<u8>, read_at_open: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("target/core");
    let target = configfs::target_root(&core);
    let dev = configfs::device_dir(&core, 0, "lun0");
    write(
        &target.join("loopback/naa.5001405000000001/tpgt_1/lun/lun_0/statistics/scsi_port/indx"),
        "1\n",
    );
    match in_gp2 {
        None => group(&dev, "default_tg_pt_gp", 0, 0, MEMBER),
        Some(st) => {
            group(&dev, "default_tg_pt_gp", 0, 0, "");
            group(&dev, "gp2", 2, st, MEMBER);
        }
    }
    let mut lun = LunInfo::new(512, 2048, "alua-ring-0001");
    if read_at_open {
        lun.alua = configfs::read_alua(&dev, &target);
        assert!(lun.alua.is_some());
    }
    let (d, t) = (dev.clone(), target.clone());
    let cfg = DeviceConfig {
        workers: 2,
        max_inflight: 16,
        alua: Some(AluaSource(Arc::new(move || configfs::read_alua(&d, &t)))),
        ..DeviceConfig::default()
    };
    let emu = EmuConfig {
        cmdr_size: 256 * 1024,
        data_size: 1 << 20,
        ..EmuConfig::default()
    };
    let h = Harness::new(Arc::new(RamBackend::new(2048 * 512)), lun, emu, &cfg);
    Rig { _dir: dir, dev, h }
}

fn rtpg(extended: bool, alloc: u32) -> [u8; 12] {
    let a = alloc.to_be_bytes();
    [
        0xA3,
        if extended { 0x2A } else { 0x0A },
        0,
        0,
        0,
        0,
        a[0],
        a[1],
        a[2],
        a[3],
        0,
        0,
    ]
}

fn run_rtpg(h: &mut Harness, extended: bool, alloc: u32) -> Completed {
    let c = h.run(&rtpg(extended, alloc), DataDir::FromDevice(alloc as usize));
    assert_good(&c);
    c
}

#[track_caller]
fn assert_sense(c: &Completed, want: (u8, u8, u8), what: &str) {
    assert_eq!(c.status, CHECK_CONDITION, "{what}: status");
    assert_eq!(sense_of(c), want, "{what}");
}

fn read1(h: &mut Harness) -> Completed {
    h.run(&cdb::read16(0, 1), DataDir::FromDevice(512))
}

/// The daemon does not read the groups while the kernel's `enable` waits: the device reads
/// them before its first command, so even a first READ (no INQUIRY before it) is refused in
/// standby, and a LUN whose group is active serves it.
#[test]
fn groups_left_to_the_device_are_read_before_its_first_command() {
    let mut r = rig_read_at_open(Some(2), false);
    assert_sense(&read1(&mut r.h), STANDBY, "first READ, group in standby");
    let mut r = rig_read_at_open(None, false);
    assert_good(&read1(&mut r.h));
    let c = run_rtpg(&mut r.h, false, 512);
    assert_eq!(c.data_in[4] & 0x0F, 0, "default group active/optimized");
}

#[test]
fn default_group_is_reported_active_optimized() {
    let mut r = rig(None);
    let c = run_rtpg(&mut r.h, false, 256);
    let d = &c.data_in;
    assert_eq!(d.len(), 16, "read_len: 4 + 8 + 4");
    assert_eq!(u32::from_be_bytes(d[0..4].try_into().unwrap()), 12);
    // AO, LIO's default supported states (T O U S AN AO), id 0, 1 port, RTPI 1.
    assert_eq!(&d[4..12], &[0x00, 0xCF, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&d[12..16], &[0, 0, 0, 1]);
    // Standard INQUIRY: TPGS implicit.
    let c =
        r.h.run(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96));
    assert_good(&c);
    assert_eq!(c.data_in[5] & 0x30, 0x10);
    // VPD 0x83: relative target port 1, target port group 0.
    let c =
        r.h.run(&cdb::inquiry(true, 0x83, 512), DataDir::FromDevice(512));
    assert_good(&c);
    let page = &c.data_in;
    let n = usize::from(u16::from_be_bytes([page[2], page[3]])) + 4;
    assert_eq!(&page[n - 16..n - 8], &[0x01, 0x14, 0, 4, 0, 0, 0, 1]);
    assert_eq!(&page[n - 8..n], &[0x01, 0x15, 0, 4, 0, 0, 0, 0]);
    // Data commands run.
    assert_good(&read1(&mut r.h));
    assert_good(&r.h.run(&cdb::test_unit_ready(), DataDir::None));
}

#[test]
fn extended_header_and_allocation_length() {
    let mut r = rig(Some(0));
    let full = run_rtpg(&mut r.h, true, 512);
    let d = &full.data_in;
    assert_eq!(d.len(), 8 + 8 + 12);
    assert_eq!(u32::from_be_bytes(d[0..4].try_into().unwrap()), 24);
    assert_eq!(d[4], 0x10);
    assert_eq!(u16::from_be_bytes([d[18], d[19]]), 2, "gp2 second");
    // A short allocation length truncates; the length field still tells the full size.
    let short = run_rtpg(&mut r.h, true, 10);
    assert_eq!(short.data_in, d[..10]);
    let tiny = run_rtpg(&mut r.h, false, 2);
    assert_eq!(tiny.data_in, [0, 0]);
}

#[test]
fn admin_state_change_is_seen_and_enforced() {
    let mut r = rig(Some(0));
    assert_good(&read1(&mut r.h));
    // echo 2 > alua/gp2/alua_access_state
    write(&r.dev.join("alua/gp2/alua_access_state"), "2\n");
    let c = run_rtpg(&mut r.h, false, 64);
    assert_eq!(c.data_in[12] & 0x0F, 2, "gp2 reported standby at once");
    // RTPG re-read configfs: the state is in force for the next READ.
    assert_sense(&read1(&mut r.h), STANDBY, "READ in standby");
    assert_sense(
        &r.h.run(&cdb::test_unit_ready(), DataDir::None),
        STANDBY,
        "TEST UNIT READY in standby",
    );
    assert_sense(
        &r.h.run(&cdb::write16(0, 1, false), DataDir::ToDevice(&[0u8; 512])),
        STANDBY,
        "WRITE in standby",
    );
    assert_good(&r.h.run(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96)));
    assert_good(&r.h.run(&cdb::read_capacity16(32), DataDir::FromDevice(32)));
    run_rtpg(&mut r.h, true, 64);

    // Without any RTPG or INQUIRY, a change is picked up within ALUA_REFRESH.
    write(&r.dev.join("alua/gp2/alua_access_state"), "3\n");
    let t = Instant::now();
    loop {
        let c = read1(&mut r.h);
        if c.status == CHECK_CONDITION && sense_of(&c) == UNAVAILABLE {
            break;
        }
        assert_sense(&c, STANDBY, "READ before the refresh");
        assert!(
            t.elapsed() < ALUA_REFRESH + Duration::from_secs(2),
            "unavailable not seen within {ALUA_REFRESH:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_sense(
        &r.h.run(&cdb::read_capacity10(), DataDir::FromDevice(8)),
        UNAVAILABLE,
        "READ CAPACITY in unavailable",
    );
    write(&r.dev.join("alua/gp2/alua_access_state"), "15\n");
    run_rtpg(&mut r.h, false, 64);
    assert_sense(&read1(&mut r.h), TRANSITIONING, "READ while transitioning");

    // Back to active/optimized: I/O flows again.
    write(&r.dev.join("alua/gp2/alua_access_state"), "0\n");
    run_rtpg(&mut r.h, false, 64);
    assert_good(&read1(&mut r.h));
}

#[test]
fn without_groups_rtpg_is_refused_and_nothing_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (d, t) = (dir.path().join("dev"), dir.path().to_path_buf());
    let cfg = DeviceConfig {
        workers: 1,
        max_inflight: 8,
        alua: Some(AluaSource(Arc::new(move || configfs::read_alua(&d, &t)))),
        ..DeviceConfig::default()
    };
    let lun = LunInfo::new(512, 2048, "no-alua");
    let mut h = Harness::new(
        Arc::new(RamBackend::new(2048 * 512)),
        lun,
        EmuConfig::default(),
        &cfg,
    );
    let c = h.run(&rtpg(false, 64), DataDir::FromDevice(64));
    assert_sense(&c, (0x05, 0x24, 0x00), "RTPG without groups");
    let c = h.run(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96));
    assert_eq!(c.data_in[5] & 0x30, 0);
    assert_good(&read1(&mut h));
}

/// A thread that holds the LUN's facts for a long time (as a slow `status` reader could) must
/// not stall the loop when an ALUA change is put in force: the new state is enforced on the
/// next command at once, and the facts follow once the reader lets go.
#[test]
fn a_reader_holding_the_lun_facts_does_not_stall_an_alua_change() {
    let mut r = rig(Some(0));
    assert_good(&read1(&mut r.h));
    let link = r.h.link().clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _facts = link.lun.read();
        held_tx.send(()).unwrap();
        // Held until released, at most 20 s.
        let _ = release_rx.recv_timeout(Duration::from_secs(20));
    });
    held_rx.recv().unwrap();
    write(&r.dev.join("alua/gp2/alua_access_state"), "2\n");
    let t = Instant::now();
    // RTPG re-reads the groups: the refresh finds the change while the facts are held.
    let c = r.h.run(&rtpg(false, 64), DataDir::FromDevice(64));
    assert_good(&c);
    assert_sense(&read1(&mut r.h), STANDBY, "READ right after the change");
    let took = t.elapsed();
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        took < Duration::from_secs(5),
        "the loop waited {took:?} for a reader of the LUN's facts"
    );
    // Once the reader is gone the facts follow: RTPG reports standby.
    let c = run_rtpg(&mut r.h, false, 64);
    assert_eq!(c.data_in[12] & 0x0F, 2, "gp2 reported standby");
    assert_eq!(
        r.h.link()
            .lun
            .read()
            .alua
            .as_ref()
            .and_then(|a| a.local_state()),
        Some(2),
        "the LUN's facts hold the new state"
    );
}
