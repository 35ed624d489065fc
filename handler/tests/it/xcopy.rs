//! EXTENDED COPY (LID1), RECEIVE COPY RESULTS and GET LBA STATUS through the emulated ring
//! and the real dispatcher: copies between two LUNs served by this process (each on its own
//! harness), within one LUN, to a LUN not served here, stopped by an abort between chunks;
//! the copy status afterwards; the allocation map of a file LUN after UNMAP.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_scsi::lun::LunInfo;
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, sense_of, Harness, LunSpec};

const BS: usize = 512;
const BLOCKS: u64 = 8192;
const CHECK_CONDITION: u8 = 0x02;
const TASK_ABORTED: u8 = 0x40;

fn emu() -> EmuConfig {
    EmuConfig {
        cmdr_size: 256 * 1024,
        data_size: 8 << 20,
        ..EmuConfig::default()
    }
}

/// Small bounce buffers (64 blocks), so a copy of a few hundred blocks takes several chunks.
fn dev_cfg() -> DeviceConfig {
    DeviceConfig {
        workers: 2,
        max_inflight: 32,
        scratch_bytes: 64 * BS,
        ..DeviceConfig::default()
    }
}

/// A harness over `backend` with unit serial `serial` (hex digits: they make the NAA
/// designator, which must be unique among the devices of this test process).
fn harness(backend: Arc<dyn Backend>, serial: &str) -> (Harness, LunInfo) {
    let lun = LunSpec::blocks(BLOCKS, 512)
        .write_cache(false)
        .serial(serial)
        .lun_info(backend.as_ref());
    let mut h = Harness::kernel(emu());
    h.start(&format!("xcopy/{serial}"), backend, lun.clone(), &dev_cfg());
    (h, lun)
}

fn ram(serial: &str) -> (Harness, LunInfo) {
    harness(Arc::new(RamBackend::new(BLOCKS * BS as u64)), serial)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            seed.wrapping_mul(31)
                .wrapping_add(u8::try_from(i % 251).unwrap())
        })
        .collect()
}

fn write_blocks(h: &mut Harness, lba: u64, data: &[u8]) {
    let n = u32::try_from(data.len() / BS).unwrap();
    assert_good(&h.run(&cdb::write16(lba, n, false), DataDir::ToDevice(data)));
}

fn read_blocks(h: &mut Harness, lba: u64, n: u32) -> Vec<u8> {
    let c = h.run(&cdb::read16(lba, n), DataDir::FromDevice(n as usize * BS));
    assert_good(&c);
    c.data_in
}

fn xcopy_cdb(param_len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&param_len.to_be_bytes());
    c
}

fn rcr_cdb(service_action: u8, list_id: u8, alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[1] = service_action;
    c[2] = list_id;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

fn get_lba_status_cdb(lba: u64, alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x12;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// An identification CSCD descriptor naming `naa`.
fn cscd(naa: &[u8; 16]) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0] = 0xE4;
    d[4] = 0x01;
    d[5] = 0x03;
    d[7] = 16;
    d[8..24].copy_from_slice(naa);
    d[29..32].copy_from_slice(&[0, 0x02, 0x00]);
    d
}

/// An EXTENDED COPY(LID1) parameter list with one block-to-block segment.
fn copy_list(
    list_id: u8,
    usage: u8,
    cscds: &[[u8; 16]],
    seg: (u16, u16, u16, u64, u64),
) -> Vec<u8> {
    let c: Vec<u8> = cscds.iter().flat_map(cscd).collect();
    let mut s = vec![0u8; 28];
    s[0] = 0x02;
    s[2..4].copy_from_slice(&0x18u16.to_be_bytes());
    s[4..6].copy_from_slice(&seg.0.to_be_bytes());
    s[6..8].copy_from_slice(&seg.1.to_be_bytes());
    s[10..12].copy_from_slice(&seg.2.to_be_bytes());
    s[12..20].copy_from_slice(&seg.3.to_be_bytes());
    s[20..28].copy_from_slice(&seg.4.to_be_bytes());
    let mut l = vec![0u8; 16];
    l[0] = list_id;
    l[1] = usage << 3;
    l[2..4].copy_from_slice(&u16::try_from(c.len()).unwrap().to_be_bytes());
    l[8..12].copy_from_slice(&28u32.to_be_bytes());
    l.extend_from_slice(&c);
    l.extend_from_slice(&s);
    l
}

fn xcopy(h: &mut Harness, list: &[u8]) -> Completed {
    let len = u32::try_from(list.len()).unwrap();
    h.run(&xcopy_cdb(len), DataDir::ToDevice(list))
}

#[track_caller]
fn assert_sense(c: &Completed, want: (u8, u8, u8), what: &str) {
    assert_eq!(c.status, CHECK_CONDITION, "{what}: status {:#x}", c.status);
    assert_eq!(sense_of(c), want, "{what}");
}

#[test]
fn extended_copy_between_two_luns_copies_every_block_both_pushed_and_pulled() {
    let (mut a, lun_a) = ram("a0a0a0a1");
    let (mut b, lun_b) = ram("b0b0b0b1");
    let (na, nb) = (lun_a.naa_designator(), lun_b.naa_designator());
    assert_ne!(na, nb);
    // 700 blocks: eleven chunks of the 64-block bounce buffer.
    let data = pattern(3, 700 * BS);
    write_blocks(&mut a, 100, &data);
    // Received by the source (push): A's blocks 100.. to B's 5000..
    let c = xcopy(&mut a, &copy_list(0, 3, &[na, nb], (0, 1, 700, 100, 5000)));
    assert_good(&c);
    assert_eq!(read_blocks(&mut b, 5000, 700), data, "pushed copy");
    assert_eq!(
        read_blocks(&mut b, 4999, 1),
        vec![0u8; BS],
        "nothing before"
    );
    assert_eq!(read_blocks(&mut b, 5700, 1), vec![0u8; BS], "nothing after");
    // Received by the destination (pull), descriptors in the other order.
    let c = xcopy(&mut b, &copy_list(0, 3, &[nb, na], (1, 0, 700, 100, 7000)));
    assert_good(&c);
    assert_eq!(read_blocks(&mut b, 7000, 700), data, "pulled copy");
}

fn file(dir: &tempfile::TempDir, name: &str, serial: &str) -> (Harness, LunInfo) {
    let b = FileBackend::open(&dir.path().join(name), BLOCKS * BS as u64).expect("file");
    harness(Arc::new(b), serial)
}

#[test]
fn extended_copy_between_two_file_luns_is_copied_by_the_kernel_and_falls_back_on_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, lun_a) = file(&dir, "a.img", "a1a1a1a2");
    let (mut b, lun_b) = file(&dir, "b.img", "b1b1b1b2");
    let (na, nb) = (lun_a.naa_designator(), lun_b.naa_designator());
    let data = pattern(5, 700 * BS);
    write_blocks(&mut a, 100, &data);
    let before = tcmu_warden::device::file_copy::bytes_copied_in_kernel();
    // Pushed from A to B (write cache off on both: the copy is synced before GOOD).
    assert_good(&xcopy(
        &mut a,
        &copy_list(0, 3, &[na, nb], (0, 1, 700, 100, 5000)),
    ));
    assert_eq!(read_blocks(&mut b, 5000, 700), data, "pushed copy");
    assert_eq!(read_blocks(&mut b, 4999, 1), vec![0u8; BS]);
    assert_eq!(read_blocks(&mut b, 5700, 1), vec![0u8; BS]);
    // Other tests of this process may copy too: at least this copy's bytes were the kernel's.
    let after = tcmu_warden::device::file_copy::bytes_copied_in_kernel();
    assert!(
        after - before >= 700 * BS as u64,
        "copy_file_range used: {}",
        after - before
    );
    // The files on disk agree byte for byte.
    let fa = std::fs::read(dir.path().join("a.img")).unwrap();
    let fb = std::fs::read(dir.path().join("b.img")).unwrap();
    assert_eq!(&fb[5000 * BS..5700 * BS], &fa[100 * BS..800 * BS]);
    // Overlapping ranges of one file: the kernel refuses, the bounce buffer copies.
    assert_good(&xcopy(
        &mut a,
        &copy_list(0, 3, &[na], (0, 0, 700, 100, 150)),
    ));
    assert_eq!(read_blocks(&mut a, 150, 700), data, "overlapping copy");
}

#[test]
fn extended_copy_within_one_lun_with_overlapping_ranges_copies_as_if_read_first() {
    let (mut a, lun) = ram("c0c0c0c1");
    let n = lun.naa_designator();
    let data = pattern(9, 300 * BS);
    write_blocks(&mut a, 1000, &data);
    // Forward overlap: destination after the source.
    assert_good(&xcopy(
        &mut a,
        &copy_list(0, 3, &[n], (0, 0, 300, 1000, 1100)),
    ));
    assert_eq!(read_blocks(&mut a, 1100, 300), data);
    // Backward overlap: destination before the source.
    assert_good(&xcopy(
        &mut a,
        &copy_list(0, 3, &[n], (0, 0, 300, 1100, 1050)),
    ));
    assert_eq!(read_blocks(&mut a, 1050, 300), data);
}

#[test]
fn extended_copy_to_a_lun_not_served_here_or_past_its_end_is_copy_target_device_not_reachable() {
    let (mut a, lun) = ram("d0d0d0d1");
    let n = lun.naa_designator();
    let mut stranger = n;
    stranger[15] ^= 0x5A;
    let c = xcopy(&mut a, &copy_list(0, 3, &[n, stranger], (0, 1, 8, 0, 0)));
    assert_sense(&c, (0x0A, 0x0D, 0x02), "unknown destination");
    let c = xcopy(&mut a, &copy_list(0, 3, &[stranger, n], (0, 1, 8, 0, 0)));
    assert_sense(&c, (0x0A, 0x0D, 0x02), "unknown source");
    let c = xcopy(&mut a, &copy_list(0, 3, &[n], (0, 0, 8, 0, BLOCKS - 4)));
    assert_sense(&c, (0x0A, 0x0D, 0x02), "past the end");
    // Parameter list errors come from the parser: a truncated list, too many segments.
    let l = copy_list(0, 3, &[n], (0, 0, 8, 0, 16));
    let c = h_run_truncated(&mut a, &l, l.len() - 1);
    assert_sense(&c, (0x05, 0x1A, 0x00), "truncated");
    // An empty parameter list copies nothing.
    assert_good(&a.run(&xcopy_cdb(0), DataDir::None));
}

fn h_run_truncated(h: &mut Harness, list: &[u8], n: usize) -> Completed {
    let len = u32::try_from(n).unwrap();
    h.run(&xcopy_cdb(len), DataDir::ToDevice(&list[..n]))
}

#[test]
fn receive_copy_results_reports_operating_parameters_and_the_status_of_a_held_copy() {
    let (mut a, lun) = ram("e0e0e0e1");
    let n = lun.naa_designator();
    let c = a.run(&rcr_cdb(0x03, 0, 64), DataDir::FromDevice(64));
    assert_good(&c);
    assert_eq!(&c.data_in[0..4], &[0, 0, 0, 42]);
    assert_eq!(u16::from_be_bytes([c.data_in[8], c.data_in[9]]), 2, "CSCDs");
    assert_eq!(
        u16::from_be_bytes([c.data_in[10], c.data_in[11]]),
        1,
        "segments"
    );
    // No copy with list identifier 5 yet.
    let c = a.run(&rcr_cdb(0x00, 5, 12), DataDir::FromDevice(12));
    assert_sense(&c, (0x05, 0x24, 0x00), "unknown list identifier");
    // A held copy (LIST ID USAGE 00b) of 100 blocks.
    assert_good(&xcopy(&mut a, &copy_list(5, 0, &[n], (0, 0, 100, 0, 200))));
    let c = a.run(&rcr_cdb(0x00, 5, 12), DataDir::FromDevice(12));
    assert_good(&c);
    assert_eq!(c.data_in[4], 0x01, "completed without errors");
    assert_eq!(
        u16::from_be_bytes([c.data_in[5], c.data_in[6]]),
        1,
        "one segment"
    );
    assert_eq!(c.data_in[7], 0, "units: bytes");
    assert_eq!(
        u32::from_be_bytes([c.data_in[8], c.data_in[9], c.data_in[10], c.data_in[11]]),
        100 * 512
    );
    // Reported once, then discarded (SPC-4: read with its list identifier).
    let c = a.run(&rcr_cdb(0x00, 5, 12), DataDir::FromDevice(12));
    assert_sense(&c, (0x05, 0x24, 0x00), "discarded after it was read");
    // A held copy refused before it moved a block keeps no status (what libiscsi's
    // ReceiveCopyResults.CopyStatus needs after the ExtendedCopy suite's refused copies).
    assert_sense(
        &xcopy(&mut a, &copy_list(6, 0, &[n], (0, 0, 100, 0, BLOCKS - 1))),
        (0x0A, 0x0D, 0x02),
        "past the end",
    );
    let c = a.run(&rcr_cdb(0x00, 6, 12), DataDir::FromDevice(12));
    assert_sense(
        &c,
        (0x05, 0x24, 0x00),
        "nothing held for a copy that never started",
    );
    // The same list identifier then serves a copy that completes.
    assert_good(&xcopy(&mut a, &copy_list(6, 0, &[n], (0, 0, 8, 0, 300))));
    let c = a.run(&rcr_cdb(0x00, 6, 12), DataDir::FromDevice(12));
    assert_good(&c);
    assert_eq!(c.data_in[4], 0x01, "completed without errors");
    // Unsupported service actions are refused by the decoder.
    let c = a.run(&rcr_cdb(0x01, 0, 12), DataDir::FromDevice(12));
    assert_sense(&c, (0x05, 0x24, 0x00), "RECEIVE DATA");
}

#[test]
fn an_aborted_extended_copy_stops_between_chunks() {
    let inner = Arc::new(RamBackend::new(BLOCKS * BS as u64));
    let slow = Arc::new(FaultBackend::new(
        inner,
        parse_rules("read:delay=40ms").expect("rules"),
    ));
    let (mut a, lun) = harness(slow, "f0f0f0f1");
    let n = lun.naa_designator();
    let ones = vec![0xA5u8; 2048 * BS];
    write_blocks(&mut a, 0, &ones);
    // 2048 blocks = 32 chunks of 40 ms each: abort after a few.
    // LIST ID USAGE 00b: the status of the stopped copy is held.
    let list = copy_list(9, 0, &[n], (0, 0, 2048, 0, 4096));
    let len = u32::try_from(list.len()).unwrap();
    let started = Instant::now();
    let id = a.submit(&xcopy_cdb(len), DataDir::ToDevice(&list));
    std::thread::sleep(Duration::from_millis(200));
    for f in a.link().aborted.iter() {
        f.store(true, Ordering::SeqCst);
    }
    let c = a.wait(id);
    assert_eq!(c.status, TASK_ABORTED, "stopped by the abort");
    assert!(
        started.elapsed() < Duration::from_millis(32 * 40),
        "stopped before the end: {:?}",
        started.elapsed()
    );
    for f in a.link().aborted.iter() {
        f.store(false, Ordering::SeqCst);
    }
    let tail = read_blocks(&mut a, 4096 + 2047, 1);
    assert_eq!(tail, vec![0u8; BS], "the last chunk was never written");
    // It moved some blocks, so its status is held: completed with errors, part of the bytes.
    let c = a.run(&rcr_cdb(0x00, 9, 12), DataDir::FromDevice(12));
    assert_good(&c);
    assert_eq!(c.data_in[4], 0x02, "completed with errors");
    let bytes = u32::from_be_bytes([c.data_in[8], c.data_in[9], c.data_in[10], c.data_in[11]]);
    assert!(bytes > 0 && bytes < 2048 * 512, "partial: {bytes}");
}

#[test]
fn get_lba_status_reports_holes_of_a_file_lun_as_deallocated_and_the_rest_mapped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend =
        Arc::new(FileBackend::open(&dir.path().join("lun.img"), BLOCKS * BS as u64).expect("file"));
    let (mut h, lun) = harness(backend, "0a0a0a01");
    // A fresh sparse file: one deallocated extent covering the whole LUN, when LBPME.
    let c = h.run(&get_lba_status_cdb(0, 24), DataDir::FromDevice(24));
    assert_good(&c);
    let desc = |c: &Completed, i: usize| {
        let d = &c.data_in[8 + 16 * i..24 + 16 * i];
        (
            u64::from_be_bytes(d[0..8].try_into().unwrap()),
            u32::from_be_bytes(d[8..12].try_into().unwrap()),
            d[12] & 0x0F,
        )
    };
    if !lun.caps.unmap {
        // No LBPME: every LBA is mapped.
        assert_eq!(desc(&c, 0), (0, u32::try_from(BLOCKS).unwrap(), 0));
        eprintln!("filesystem of the temp dir cannot punch holes: mapped only");
        return;
    }
    let rc16 = h.run(&cdb::read_capacity16(32), DataDir::FromDevice(32));
    assert_eq!(rc16.data_in[14] & 0x80, 0x80, "LBPME advertised");
    assert_eq!(
        desc(&c, 0),
        (0, u32::try_from(BLOCKS).unwrap(), 1),
        "all a hole"
    );
    // Write everything, then unmap 128 blocks (64 KiB, aligned) in the middle.
    write_blocks(
        &mut h,
        0,
        &pattern(1, usize::try_from(BLOCKS).unwrap() * BS),
    );
    let params = cdb::unmap_params(&[(1024, 128)]);
    assert_good(&h.run(
        &cdb::unmap(u16::try_from(params.len()).unwrap()),
        DataDir::ToDevice(&params),
    ));
    let c = h.run(&get_lba_status_cdb(0, 8 + 3 * 16), DataDir::FromDevice(56));
    assert_good(&c);
    assert_eq!(
        u32::from_be_bytes(c.data_in[0..4].try_into().unwrap()),
        4 + 3 * 16,
        "three descriptors"
    );
    assert_eq!(desc(&c, 0), (0, 1024, 0), "mapped before the hole");
    assert_eq!(desc(&c, 1), (1024, 128, 1), "the hole");
    assert_eq!(
        desc(&c, 2),
        (1152, u32::try_from(BLOCKS - 1152).unwrap(), 0),
        "mapped after"
    );
    // Starting inside the hole, the first descriptor starts at the LBA asked for.
    let c = h.run(&get_lba_status_cdb(1100, 24), DataDir::FromDevice(24));
    assert_good(&c);
    assert_eq!(desc(&c, 0), (1100, 52, 1));
    // Past the end: LBA OUT OF RANGE.
    let c = h.run(&get_lba_status_cdb(BLOCKS, 24), DataDir::FromDevice(24));
    assert_sense(&c, (0x05, 0x21, 0x00), "past the end");
}

#[test]
fn inquiry_reports_3pc_and_the_third_party_copy_page() {
    let (mut a, _) = ram("1a1a1a01");
    let c = a.run(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96));
    assert_good(&c);
    assert_eq!(c.data_in[5] & 0x08, 0x08, "3PC");
    let c = a.run(&cdb::inquiry(true, 0x00, 64), DataDir::FromDevice(64));
    assert!(c.data_in[4..4 + usize::from(c.data_in[3])].contains(&0x8F));
    let c = a.run(&cdb::inquiry(true, 0x8F, 255), DataDir::FromDevice(255));
    assert_good(&c);
    assert_eq!(c.data_in[1], 0x8F);
    // The Supported Commands descriptor comes first and names both commands.
    assert_eq!(&c.data_in[4..6], &[0x00, 0x01]);
    assert_eq!(&c.data_in[9..16], &[0x83, 1, 0x00, 0x84, 2, 0x00, 0x03]);
}
