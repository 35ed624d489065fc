//! End-to-end SCSI behaviour through the emulated kernel ring and the real dispatcher, with a
//! file backend in a temporary directory: what an initiator would see, command by command,
//! plus the ring-level failure modes (bad entries, a corrupted ring, TMR entries, a full ring
//! and data area, a stop while the backend hangs).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_scsi::lun::LunInfo;
use tcmu_scsi::sense::Sense;
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::backend::{Backend, Io};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, sense_of, wait_until, Harness, LunSpec};

const BS: usize = 512;
const BS64: u64 = 512;
const BLOCKS: u64 = 2048;

const CHECK_CONDITION: u8 = 0x02;
const BUSY: u8 = 0x08;
const ILLEGAL_REQUEST: u8 = 0x05;
const LBA_OUT_OF_RANGE: (u8, u8, u8) = (0x05, 0x21, 0x00);
const INVALID_OPCODE: (u8, u8, u8) = (0x05, 0x20, 0x00);
const INVALID_FIELD_IN_CDB: (u8, u8, u8) = (0x05, 0x24, 0x00);
const INVALID_FIELD_IN_PARAM_LIST: (u8, u8, u8) = (0x05, 0x26, 0x00);
const MISCOMPARE: (u8, u8, u8) = (0x0E, 0x1D, 0x00);
const INTERNAL_TARGET_FAILURE: (u8, u8, u8) = (0x04, 0x44, 0x00);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn attrs(blocks: u64, write_cache: bool) -> LunSpec {
    LunSpec::blocks(blocks, 512)
        .write_cache(write_cache)
        .serial("qa-scsi-ring-0001")
}

/// A file-backed LUN of `BLOCKS` blocks in a fresh temporary directory.
fn file_lun() -> (tempfile::TempDir, Arc<FileBackend>, LunInfo) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(
        FileBackend::open(&dir.path().join("lun.img"), BLOCKS * BS64).expect("file backend"),
    );
    let lun = attrs(BLOCKS, true).lun_info(backend.as_ref());
    (dir, backend, lun)
}

fn small_emu() -> EmuConfig {
    EmuConfig {
        cmdr_size: 256 * 1024,
        data_size: 4 << 20,
        ..EmuConfig::default()
    }
}

fn dev_cfg() -> DeviceConfig {
    DeviceConfig {
        workers: 4,
        max_inflight: 64,
        ..DeviceConfig::default()
    }
}

/// A harness over a file LUN; the temp dir must outlive it.
fn file_harness() -> (tempfile::TempDir, Harness, LunInfo) {
    let (dir, backend, lun) = file_lun();
    let h = Harness::new(backend, lun.clone(), small_emu(), &dev_cfg());
    (dir, h, lun)
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
    let c = h.run(&cdb::write16(lba, n, false), DataDir::ToDevice(data));
    assert_good(&c);
}

fn read_blocks(h: &mut Harness, lba: u64, n: u32) -> Vec<u8> {
    let c = h.run(&cdb::read16(lba, n), DataDir::FromDevice(n as usize * BS));
    assert_good(&c);
    c.data_in
}

#[track_caller]
fn assert_check(c: &Completed, want: (u8, u8, u8), what: &str) {
    assert_eq!(
        c.status, CHECK_CONDITION,
        "{what}: expected CHECK CONDITION, got status {:#x}",
        c.status
    );
    assert_eq!(sense_of(c), want, "{what}: sense key/asc/ascq");
}

/// `backend` behind a [`FaultBackend`] that holds the operations `rules` names (`any:hang`,
/// or `read:hang,at=<byte offset>`) until the test releases them (`set_rules(Vec::new())`
/// releases them and holds no more; `release_hung` releases them and keeps holding).
fn held(backend: Arc<FileBackend>, rules: &str) -> Arc<FaultBackend> {
    Arc::new(FaultBackend::new(
        backend,
        parse_rules(rules).expect("rules"),
    ))
}

/// Hold the reads at one byte offset.
fn hold_reads_at(backend: Arc<FileBackend>, offset: u64) -> Arc<FaultBackend> {
    held(backend, &format!("read:hang,at={offset}"))
}

/// A backend that claims a size and fails every operation (for geometry-only tests).
struct NullBackend(u64);

impl Backend for NullBackend {
    fn describe(&self) -> String {
        "null".into()
    }
    fn size(&self) -> u64 {
        self.0
    }
    fn submit(&self, io: Io) {
        io.complete(Err(nix::errno::Errno::EIO));
    }
}

/// utime + stime (seconds) of this process's thread whose name is `comm`.
fn thread_cpu_secs(comm: &str) -> f64 {
    let want: String = comm.chars().take(15).collect();
    let mut found = None;
    for e in std::fs::read_dir("/proc/self/task").expect("procfs") {
        let p = e.expect("task entry").path();
        if std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim_end() == want) {
            assert!(found.is_none(), "two threads named {want:?}");
            found = Some(p);
        }
    }
    let p = found.unwrap_or_else(|| panic!("no thread named {want:?}"));
    let stat = std::fs::read_to_string(p.join("stat")).expect("task stat");
    // Fields after the ")" of comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u32::try_from(hz).ok().filter(|&v| v > 0).unwrap_or(100);
    f64::from(u32::try_from(ticks).unwrap()) / f64::from(hz)
}

// ---------------------------------------------------------------------------------------------
// Opcodes
// ---------------------------------------------------------------------------------------------

#[test]
fn unsupported_opcodes_get_invalid_opcode_sense_and_device_keeps_serving() {
    let (_dir, mut h, _lun) = file_harness();
    let supported = |op: u8| tcmu_scsi::opcodes::SUPPORTED.iter().any(|o| o.opcode == op);
    let mut ids = Vec::new();
    for op in 0..=255u8 {
        if supported(op) {
            continue;
        }
        let cdb = cdb::bare(op);
        // Half of them arrive with a Data-In buffer full of stale bytes, as the kernel sends.
        let dir = if op % 2 == 0 {
            DataDir::None
        } else {
            DataDir::FromDevice(512)
        };
        ids.push((op, h.submit(&cdb, dir)));
    }
    assert!(
        ids.len() > 200,
        "most opcodes are unsupported ({} tested)",
        ids.len()
    );
    assert!(
        ids.iter().any(|&(op, _)| op == 0xA0),
        "REPORT LUNS is exercised"
    );
    for (op, id) in ids {
        let c = h.wait(id);
        if op == tcmu_scsi::opcodes::REPORT_LUNS && c.status == 0 {
            // Answering it ourselves is also sane: a LUN list whose length is whole entries.
            let n = u32::from_be_bytes(c.data_in[..4].try_into().unwrap());
            assert_eq!(n % 8, 0, "REPORT LUNS list length {n}");
            continue;
        }
        assert_check(&c, INVALID_OPCODE, &format!("opcode {op:#04x}"));
    }
    // Still serving: emulated and data commands.
    assert_good(&h.run(&cdb::test_unit_ready(), DataDir::None));
    let data = pattern(7, 4 * BS);
    write_blocks(&mut h, 3, &data);
    assert_eq!(read_blocks(&mut h, 3, 4), data);
    assert!(!h.stats().broken.load(Ordering::SeqCst));
    h.stop();
    assert_eq!(h.emu.outstanding(), 0, "every command completed");
}

// ---------------------------------------------------------------------------------------------
// Range and length checks
// ---------------------------------------------------------------------------------------------

#[test]
fn lba_out_of_range_on_every_data_command_is_illegal_request_21_00() {
    let (_dir, mut h, _lun) = file_harness();
    let one = pattern(1, BS);
    let two = pattern(2, 2 * BS);
    let last = u32::try_from(BLOCKS - 1).unwrap();
    let mut sync_far = cdb::sync16();
    sync_far[2..10].copy_from_slice(&(BLOCKS + 1).to_be_bytes());
    sync_far[10..14].copy_from_slice(&1u32.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, DataDir<'_>)> = vec![
        (
            "READ(16) at capacity",
            cdb::read16(BLOCKS, 1).to_vec(),
            DataDir::FromDevice(BS),
        ),
        (
            "READ(16) across the end",
            cdb::read16(BLOCKS - 1, 2).to_vec(),
            DataDir::FromDevice(2 * BS),
        ),
        (
            "READ(16) LBA overflow",
            cdb::read16(u64::MAX, 1).to_vec(),
            DataDir::FromDevice(BS),
        ),
        (
            "READ(10) at capacity",
            cdb::read10(last + 1, 1).to_vec(),
            DataDir::FromDevice(BS),
        ),
        (
            "WRITE(16) at capacity",
            cdb::write16(BLOCKS, 1, false).to_vec(),
            DataDir::ToDevice(&one),
        ),
        (
            "WRITE(10) across the end",
            cdb::write10(last, 2).to_vec(),
            DataDir::ToDevice(&two),
        ),
        (
            "WRITE(16) LBA overflow",
            cdb::write16(u64::MAX - 1, 2, false).to_vec(),
            DataDir::ToDevice(&two),
        ),
        (
            "WRITE SAME(16) at capacity",
            cdb::write_same16(BLOCKS, 1, false, false).to_vec(),
            DataDir::ToDevice(&one),
        ),
        (
            "WRITE SAME(16) across the end",
            cdb::write_same16(BLOCKS - 1, 2, false, false).to_vec(),
            DataDir::ToDevice(&one),
        ),
        (
            "WRITE SAME(10) at capacity",
            cdb::write_same10(last + 1, 1, false).to_vec(),
            DataDir::ToDevice(&one),
        ),
        (
            "COMPARE AND WRITE at capacity",
            cdb::caw(BLOCKS, 1).to_vec(),
            DataDir::ToDevice(&two),
        ),
        (
            "VERIFY(16) at capacity",
            cdb::verify16(BLOCKS, 1, false).to_vec(),
            DataDir::None,
        ),
        (
            "VERIFY(16) BYTCHK across the end",
            cdb::verify16(BLOCKS - 1, 2, true).to_vec(),
            DataDir::ToDevice(&two),
        ),
        (
            "VERIFY(10) at capacity",
            cdb::verify10(last + 1, 1, false).to_vec(),
            DataDir::None,
        ),
        (
            "SYNCHRONIZE CACHE(16) past the end",
            sync_far.to_vec(),
            DataDir::None,
        ),
    ];
    let ids: Vec<_> = cases
        .iter()
        .map(|(what, cdb, dir)| (*what, h.submit(cdb, *dir)))
        .collect();
    for (what, id) in ids {
        let c = h.wait(id);
        assert_check(&c, LBA_OUT_OF_RANGE, what);
    }
    // Nothing was written to the in-range part of a rejected write.
    assert_eq!(
        read_blocks(&mut h, BLOCKS - 1, 1),
        vec![0u8; BS],
        "last block untouched"
    );
    assert!(h.stats().errors.load(Ordering::Relaxed) >= 15);
}

const INVALID_FIELD_IN_COMMAND_IU: (u8, u8, u8) = (0x05, 0x0E, 0x03);

#[test]
fn data_out_that_does_not_match_the_cdb_is_refused_as_lio_does_and_changes_nothing() {
    let (_dir, mut h, _lun) = file_harness();
    let short = pattern(9, BS);
    // WRITE, COMPARE AND WRITE: LIO's data CDBs, any mismatch is 05/0E/03.
    let c = h.run(&cdb::write16(0, 8, false), DataDir::ToDevice(&short));
    assert_check(
        &c,
        INVALID_FIELD_IN_COMMAND_IU,
        "WRITE of 8 blocks from 1 block",
    );
    let long = pattern(9, 4 * BS);
    let c = h.run(&cdb::write16(0, 1, false), DataDir::ToDevice(&long));
    assert_check(
        &c,
        INVALID_FIELD_IN_COMMAND_IU,
        "WRITE of 1 block from 4 blocks",
    );
    let c = h.run(&cdb::caw(0, 1), DataDir::ToDevice(&short));
    assert_check(
        &c,
        INVALID_FIELD_IN_COMMAND_IU,
        "COMPARE AND WRITE with half its Data-Out",
    );
    // Other Data-Out commands: shorter than the CDB needs is INVALID FIELD IN CDB.
    let c = h.run(&cdb::verify16(0, 4, true), DataDir::ToDevice(&short));
    assert_check(
        &c,
        INVALID_FIELD_IN_CDB,
        "VERIFY BYTCHK=1 of 4 blocks with 1 block",
    );
    let c = h.run(&cdb::write_same16(0, 4, false, false), DataDir::None);
    assert_check(&c, INVALID_FIELD_IN_CDB, "WRITE SAME without its block");
    assert_eq!(
        read_blocks(&mut h, 0, 8),
        vec![0u8; 8 * BS],
        "no partial write"
    );
}

#[test]
fn read_into_a_shorter_buffer_transfers_what_fits() {
    // LIO hands over the initiator's buffer (iSCSI expected data transfer length) when it is
    // shorter than the CDB's transfer: fileio fills it and the initiator sees the residual.
    let (_dir, mut h, _lun) = file_harness();
    let d = pattern(21, 8 * BS);
    write_blocks(&mut h, 60, &d);
    let c = h.run(&cdb::read16(60, 8), DataDir::FromDevice(BS));
    assert_good(&c);
    assert_eq!(c.data_in, d[..BS], "8 blocks into 1 block: the first block");
    let c = h.run(&cdb::read10(60, 1), DataDir::FromDevice(200));
    assert_good(&c);
    assert_eq!(c.data_in, d[..200], "1 block into 200 bytes: its first 200");
    let c = h.run(&cdb::read10(61, 2), DataDir::FromDevice(3 * BS / 2));
    assert_good(&c);
    assert_eq!(
        c.data_in,
        d[BS..BS + 3 * BS / 2],
        "2 blocks into 1.5 blocks"
    );
    let c = h.run(&cdb::read10(60, 1), DataDir::None);
    assert_good(&c);
    assert!(c.data_in.is_empty(), "no buffer: nothing transferred, GOOD");
    // Still range-checked on the CDB's length.
    let c = h.run(&cdb::read16(BLOCKS - 1, 2), DataDir::FromDevice(BS));
    assert_check(
        &c,
        LBA_OUT_OF_RANGE,
        "READ past the end into a short buffer",
    );
}

#[test]
fn transfers_longer_than_hw_max_sectors_are_served_and_vpd_b0_still_advertises_the_limit() {
    let (_dir, mut h, lun) = file_harness();
    // attrs(): hw_max_sectors 256 of 512 bytes.
    assert_eq!(lun.max_xfer_blocks, 256);
    let n = 1024u32;
    let d = pattern(33, n as usize * BS);
    let c = h.run(&cdb::write16(0, n, false), DataDir::ToDevice(&d));
    assert_good(&c);
    assert_eq!(read_blocks(&mut h, 0, n), d, "1024-block READ after WRITE");
    let c = h.run(&cdb::verify16(0, n, true), DataDir::ToDevice(&d));
    assert_good(&c);
    let c = h.run(&cdb::verify16(0, n, false), DataDir::None);
    assert_good(&c);
    let c = inquiry(&mut h, Some(0xB0), 64, 64);
    assert_good(&c);
    let mtl = u32::from_be_bytes(c.data_in[8..12].try_into().unwrap());
    assert_eq!(mtl, 256, "MAXIMUM TRANSFER LENGTH still hw_max_sectors");
}

#[test]
fn write_same_with_unmap_and_a_non_zero_block_unmaps_and_reads_zeros() {
    // WRITE SAME(10) UNMAP=1, NUMBER OF BLOCKS 0 (to the end), a block of 0xFF, LBPRZ=1:
    // the device server may unmap instead of writing (SBC-4), LIO does, and unmapped blocks
    // read zeros.
    let (_dir, mut h, lun) = file_harness();
    if !lun.caps.unmap {
        eprintln!("filesystem of the temp dir cannot punch holes: nothing to check");
        return;
    }
    let c = h.run(&cdb::read_capacity16(32), DataDir::FromDevice(32));
    assert_good(&c);
    assert_eq!(c.data_in[14] & 0xC0, 0xC0, "LBPME and LBPRZ reported");
    let d = pattern(40, 16 * BS);
    let at = BLOCKS - 16;
    write_blocks(&mut h, at, &d);
    let ff = vec![0xFFu8; BS];
    let c = h.run(
        &cdb::write_same10(u32::try_from(at).unwrap(), 0, true),
        DataDir::ToDevice(&ff),
    );
    assert_good(&c);
    assert_eq!(
        read_blocks(&mut h, at, 16),
        vec![0u8; 16 * BS],
        "unmapped to the end: zeros"
    );
    // And with a block count, in the middle of data that must stay.
    write_blocks(&mut h, 300, &d);
    let c = h.run(
        &cdb::write_same16(304, 4, true, false),
        DataDir::ToDevice(&ff),
    );
    assert_good(&c);
    let got = read_blocks(&mut h, 300, 16);
    assert_eq!(got[..4 * BS], d[..4 * BS]);
    assert_eq!(got[4 * BS..8 * BS], vec![0u8; 4 * BS][..]);
    assert_eq!(got[8 * BS..], d[8 * BS..]);
    // Without UNMAP the block is written.
    let c = h.run(
        &cdb::write_same16(304, 4, false, false),
        DataDir::ToDevice(&ff),
    );
    assert_good(&c);
    assert_eq!(read_blocks(&mut h, 304, 4), vec![0xFFu8; 4 * BS]);
}

// ---------------------------------------------------------------------------------------------
// Emulated commands
// ---------------------------------------------------------------------------------------------

/// INQUIRY through the ring; `page` None is standard data.
fn inquiry(h: &mut Harness, page: Option<u8>, alloc: u16, buf: usize) -> Completed {
    h.run(
        &cdb::inquiry(page.is_some(), page.unwrap_or(0), alloc),
        DataDir::FromDevice(buf),
    )
}

#[test]
fn inquiry_and_every_vpd_page_honour_allocation_length_and_read_len() {
    let (_dir, mut h, lun) = file_harness();
    // The list of pages, as the initiator would first read it.
    let c = inquiry(&mut h, Some(0x00), 255, 255);
    assert_good(&c);
    let n = usize::from(u16::from_be_bytes([c.data_in[2], c.data_in[3]]));
    let pages = c.data_in[4..4 + n].to_vec();
    assert!(
        pages.windows(2).all(|w| w[0] < w[1]),
        "VPD 00h list ascending: {pages:02x?}"
    );
    for must in [0x00, 0x80, 0x83] {
        assert!(
            pages.contains(&must),
            "VPD {must:#04x} listed: {pages:02x?}"
        );
    }
    let mut all: Vec<Option<u8>> = vec![None];
    all.extend(pages.iter().map(|&p| Some(p)));
    for page in all {
        let what = format!("INQUIRY page {page:02x?}");
        // Full response, buffer much larger: read_len is the response length.
        let c = inquiry(&mut h, page, 4096, 4096);
        assert_good(&c);
        let full = c.data_in.clone();
        let len = full.len();
        assert_eq!(
            c.read_len,
            Some(u32::try_from(len).unwrap()),
            "{what}: read_len = response length"
        );
        assert!((4..4096).contains(&len), "{what}: response length {len}");
        match page {
            None => {
                assert_eq!(len, usize::from(full[4]) + 5, "{what}: ADDITIONAL LENGTH");
                assert_eq!(full[0], 0x00, "{what}: direct-access block device");
                assert_eq!(&full[8..16], &lun.vendor, "{what}: vendor");
                assert_eq!(&full[16..32], &lun.product, "{what}: product");
            }
            Some(p) => {
                assert_eq!(full[1], p, "{what}: PAGE CODE");
                assert_eq!(
                    len,
                    usize::from(u16::from_be_bytes([full[2], full[3]])) + 4,
                    "{what}: PAGE LENGTH"
                );
                if p == 0x80 {
                    assert_eq!(&full[4..], lun.serial.as_bytes(), "{what}: unit serial");
                }
            }
        }
        // Allocation length smaller than the response, buffer of the same size.
        let small = (len / 2).max(1);
        let c = inquiry(&mut h, page, u16::try_from(small).unwrap(), small);
        assert_good(&c);
        assert_eq!(
            c.data_in,
            full[..small],
            "{what}: truncated to alloc {small}"
        );
        assert!(
            c.read_len.is_none() || c.read_len == Some(u32::try_from(small).unwrap()),
            "{what}: read_len {:?}",
            c.read_len
        );
        // Allocation length smaller than the response, buffer larger than the allocation
        // length: only the allocation length is data.
        let c = inquiry(&mut h, page, 4, 512);
        assert_good(&c);
        assert_eq!(c.read_len, Some(4), "{what}: read_len = allocation length");
        assert_eq!(c.data_in, full[..4], "{what}: first 4 bytes");
        // Allocation length larger than the response, buffer exactly the allocation length.
        let big = len + 37;
        let c = inquiry(&mut h, page, u16::try_from(big).unwrap(), big);
        assert_good(&c);
        assert_eq!(
            c.data_in, full,
            "{what}: alloc {big} gives the whole response only"
        );
    }
    // A page not in the list is INVALID FIELD IN CDB.
    let unlisted = (0x01..=0xFFu8).find(|p| !pages.contains(p)).unwrap();
    let c = inquiry(&mut h, Some(unlisted), 255, 255);
    assert_check(&c, INVALID_FIELD_IN_CDB, "unlisted VPD page");
}

#[test]
fn emulated_data_in_is_zero_filled_when_the_kernel_lacks_read_len() {
    // Without TCMU_MAILBOX_FLAG_CAP_READ_LEN the kernel returns the whole buffer: everything
    // past the response must be zeros, not the stale bytes the data area holds (0xA5).
    let (_dir, backend, lun) = file_lun();
    let flags = 0xf & !tcmu_sys::mailbox_flags::CAP_READ_LEN;
    let mut h = Harness::new(
        backend,
        lun,
        EmuConfig {
            flags,
            ..small_emu()
        },
        &dev_cfg(),
    );
    let c = inquiry(&mut h, None, 255, 255);
    assert_good(&c);
    assert_eq!(c.read_len, None);
    assert_eq!(c.data_in.len(), 255);
    let resp = usize::from(c.data_in[4]) + 5;
    assert!(
        c.data_in[resp..].iter().all(|&b| b == 0),
        "stale bytes after the {resp}-byte INQUIRY response: {:02x?}",
        &c.data_in[resp..resp + 16]
    );
    let c = h.run(&cdb::inquiry(true, 0x80, 200), DataDir::FromDevice(1024));
    assert_good(&c);
    let resp = 4 + usize::from(c.data_in[3]);
    assert!(
        c.data_in[resp..].iter().all(|&b| b == 0),
        "stale bytes after the VPD 80h response"
    );
    let c = h.run(&cdb::read_capacity10(), DataDir::FromDevice(512));
    assert_good(&c);
    assert!(
        c.data_in[8..].iter().all(|&b| b == 0),
        "stale bytes after READ CAPACITY(10) data"
    );
}

#[test]
fn read_capacity_10_and_16_report_the_geometry() {
    let (_dir, mut h, lun) = file_harness();
    let c = h.run(&cdb::read_capacity10(), DataDir::FromDevice(8));
    assert_good(&c);
    assert_eq!(
        u32::from_be_bytes(c.data_in[0..4].try_into().unwrap()),
        u32::try_from(BLOCKS - 1).unwrap(),
        "RC10 last LBA"
    );
    assert_eq!(
        u32::from_be_bytes(c.data_in[4..8].try_into().unwrap()),
        512,
        "RC10 block length"
    );
    let c = h.run(&cdb::read_capacity16(32), DataDir::FromDevice(32));
    assert_good(&c);
    assert_eq!(
        u64::from_be_bytes(c.data_in[0..8].try_into().unwrap()),
        BLOCKS - 1,
        "RC16 last LBA"
    );
    assert_eq!(
        u32::from_be_bytes(c.data_in[8..12].try_into().unwrap()),
        512,
        "RC16 block length"
    );
    assert_eq!(
        c.data_in[14] & 0x80 != 0,
        lun.caps.unmap,
        "LBPME follows the unmap capability"
    );
    // Allocation length shorter than the data.
    let c = h.run(&cdb::read_capacity16(12), DataDir::FromDevice(12));
    assert_good(&c);
    assert_eq!(c.data_in.len(), 12);
    assert_eq!(
        u64::from_be_bytes(c.data_in[0..8].try_into().unwrap()),
        BLOCKS - 1
    );
}

#[test]
fn read_capacity_10_saturates_above_two_terablocks() {
    let blocks: u64 = (1 << 32) + 5;
    let backend: Arc<dyn Backend> = Arc::new(NullBackend(blocks * BS64));
    let lun = attrs(blocks, false).lun_info(backend.as_ref());
    let mut h = Harness::new(backend, lun, small_emu(), &dev_cfg());
    let c = h.run(&cdb::read_capacity10(), DataDir::FromDevice(8));
    assert_good(&c);
    assert_eq!(
        &c.data_in[0..4],
        &[0xFF; 4],
        "RC10 says: use READ CAPACITY(16)"
    );
    let c = h.run(&cdb::read_capacity16(32), DataDir::FromDevice(32));
    assert_good(&c);
    assert_eq!(
        u64::from_be_bytes(c.data_in[0..8].try_into().unwrap()),
        blocks - 1
    );
}

/// The caching mode page (20 bytes) from MODE SENSE(10) with DBD.
fn caching_page(h: &mut Harness) -> Vec<u8> {
    let c = h.run(&cdb::mode_sense10(0x08, 255), DataDir::FromDevice(255));
    assert_good(&c);
    let d = &c.data_in;
    let total = usize::from(u16::from_be_bytes([d[0], d[1]])) + 2;
    assert_eq!(total, d.len(), "MODE DATA LENGTH matches the data returned");
    let bd = usize::from(u16::from_be_bytes([d[6], d[7]]));
    let p = &d[8 + bd..];
    assert_eq!(p[0] & 0x3F, 0x08, "caching page");
    assert_eq!(usize::from(p[1]) + 2, 20, "caching page length");
    p[..20].to_vec()
}

fn mode_select_caching(h: &mut Harness, page: &[u8]) -> Completed {
    let mut params = vec![0u8; 8];
    let mut p = page.to_vec();
    p[0] &= 0x3F; // PS is reserved in MODE SELECT
    params.extend_from_slice(&p);
    h.run(
        &cdb::mode_select10(u16::try_from(params.len()).unwrap()),
        DataDir::ToDevice(&params),
    )
}

fn v_sup(h: &mut Harness) -> bool {
    let c = h.run(&cdb::inquiry(true, 0x86, 64), DataDir::FromDevice(64));
    assert_good(&c);
    c.data_in[6] & 0x01 != 0
}

#[test]
fn mode_select_turns_the_write_cache_off_and_mode_sense_shows_it() {
    let (_dir, mut h, _lun) = file_harness();
    let page = caching_page(&mut h);
    assert_ne!(page[2] & 0x04, 0, "WCE on as configured");
    assert!(v_sup(&mut h), "VPD 86h V_SUP with a volatile cache");
    let mut off = page.clone();
    off[2] &= !0x04;
    assert_good(&mode_select_caching(&mut h, &off));
    // The change is announced once (MODE PARAMETERS CHANGED), as a kernel-side one is.
    let c = h.run(&cdb::mode_sense10(0x08, 255), DataDir::FromDevice(255));
    assert_eq!(sense_of(&c), (0x06, 0x2A, 0x01));
    let now = caching_page(&mut h);
    assert_eq!(now[2] & 0x04, 0, "WCE off after MODE SELECT");
    assert!(!v_sup(&mut h), "V_SUP follows WCE");
    // Writes still work with the cache off (they become FUA).
    let d = pattern(3, BS);
    write_blocks(&mut h, 5, &d);
    assert_eq!(read_blocks(&mut h, 5, 1), d);
    // And back on.
    assert_good(&mode_select_caching(&mut h, &page));
    assert_eq!(
        sense_of(&h.run(&cdb::test_unit_ready(), DataDir::None)),
        (0x06, 0x2A, 0x01)
    );
    assert_ne!(caching_page(&mut h)[2] & 0x04, 0, "WCE on again");
}

#[test]
fn mode_select_of_an_unchangeable_field_is_invalid_field_in_parameter_list() {
    let (_dir, mut h, _lun) = file_harness();
    let page = caching_page(&mut h);
    let mut rcd = page.clone();
    rcd[2] |= 0x01; // RCD: not changeable
    rcd[2] &= !0x04; // together with a legal WCE change, which must not be applied
    let c = mode_select_caching(&mut h, &rcd);
    assert_check(&c, INVALID_FIELD_IN_PARAM_LIST, "RCD change");
    let s = Sense::from_bytes(&c.sense).unwrap();
    let f = s.field.expect("field pointer");
    assert!(!f.in_cdb, "points into the parameter list");
    assert_eq!(f.byte, 10, "header (8) + page byte 2");
    assert_ne!(
        caching_page(&mut h)[2] & 0x04,
        0,
        "WCE unchanged by the rejected MODE SELECT"
    );
    // A page we do not implement (read-write error recovery, 01h).
    let mut params = vec![0u8; 8];
    params.extend_from_slice(&[0x01, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let c = h.run(
        &cdb::mode_select10(u16::try_from(params.len()).unwrap()),
        DataDir::ToDevice(&params),
    );
    assert_check(&c, INVALID_FIELD_IN_PARAM_LIST, "unknown page");
    // A caching page with the wrong PAGE LENGTH.
    let mut bad_len = page.clone();
    bad_len[1] = 0x10;
    bad_len.truncate(18);
    let c = mode_select_caching(&mut h, &bad_len);
    assert_eq!(c.status, CHECK_CONDITION);
    assert_eq!(sense_of(&c).0, ILLEGAL_REQUEST, "wrong page length");
}

// ---------------------------------------------------------------------------------------------
// READ / COMPARE AND WRITE / WRITE SAME / UNMAP / VERIFY / SYNCHRONIZE CACHE
// ---------------------------------------------------------------------------------------------

#[test]
fn read_into_a_longer_buffer_reports_read_len_equal_to_the_transfer() {
    let (_dir, mut h, _lun) = file_harness();
    let d = pattern(11, 2 * BS);
    write_blocks(&mut h, 40, &d);
    let c = h.run(&cdb::read16(40, 2), DataDir::FromDevice(8192));
    assert_good(&c);
    assert_eq!(c.read_len, Some(1024), "read_len = transfer length");
    assert_eq!(c.data_in, d);
    // Exactly sized buffer: no read_len needed.
    let c = h.run(&cdb::read16(40, 2), DataDir::FromDevice(1024));
    assert_good(&c);
    assert!(c.read_len.is_none() || c.read_len == Some(1024));
    assert_eq!(c.data_in, d);
}

#[test]
fn read_into_a_longer_buffer_without_read_len_cap_leaves_no_stale_bytes() {
    // Pitfall 10: without READ_LEN the kernel returns the whole buffer; what lies past the
    // transfer must not be stale data of other commands.
    let (_dir, backend, lun) = file_lun();
    let flags = 0xf & !tcmu_sys::mailbox_flags::CAP_READ_LEN;
    let mut h = Harness::new(
        backend,
        lun,
        EmuConfig {
            flags,
            ..small_emu()
        },
        &dev_cfg(),
    );
    let d = pattern(12, BS);
    write_blocks(&mut h, 41, &d);
    let c = h.run(&cdb::read16(41, 1), DataDir::FromDevice(4096));
    assert_good(&c);
    assert_eq!(c.data_in.len(), 4096);
    assert_eq!(c.data_in[..BS], d[..]);
    let stale = c.data_in[BS..].iter().filter(|&&b| b != 0).count();
    assert_eq!(
        stale,
        0,
        "{stale} stale bytes past the 512-byte transfer (first: {:02x?})",
        &c.data_in[BS..BS + 8]
    );
}

fn caw_data(compare: &[u8], write: &[u8]) -> Vec<u8> {
    let mut d = compare.to_vec();
    d.extend_from_slice(write);
    d
}

#[test]
fn compare_and_write_writes_on_match_and_reports_the_miscompare_offset() {
    let (_dir, mut h, _lun) = file_harness();
    let a = pattern(20, BS);
    let b = pattern(21, BS);
    write_blocks(&mut h, 10, &a);
    assert_good(&h.run(&cdb::caw(10, 1), DataDir::ToDevice(&caw_data(&a, &b))));
    assert_eq!(read_blocks(&mut h, 10, 1), b, "CAW wrote on match");
    // Compare data that differs from the medium first at byte 100.
    let mut wrong = b.clone();
    wrong[100] ^= 0xFF;
    wrong[300] ^= 0xFF;
    let c = h.run(&cdb::caw(10, 1), DataDir::ToDevice(&caw_data(&wrong, &a)));
    assert_check(&c, MISCOMPARE, "CAW miscompare");
    assert_eq!(
        Sense::from_bytes(&c.sense).unwrap().info,
        Some(100),
        "INFORMATION = offset of the first difference"
    );
    assert_eq!(
        read_blocks(&mut h, 10, 1),
        b,
        "medium unchanged after a miscompare"
    );
    // CAW of 0 blocks is a no-op.
    assert_good(&h.run(&cdb::caw(10, 0), DataDir::None));
}

#[test]
fn concurrent_compare_and_writes_on_one_block_exactly_one_wins() {
    let (_dir, mut h, _lun) = file_harness();
    let lba = 20;
    for round in 0..25u8 {
        let x = pattern(round, BS);
        write_blocks(&mut h, lba, &x);
        let never = pattern(round.wrapping_add(100), BS);
        // Constant-filled blocks (x is not constant), tagged with the round.
        let writes: Vec<Vec<u8>> = (0..6u8)
            .map(|i| {
                let mut w = vec![(i + 1) * 17; BS];
                w[0] = round;
                w
            })
            .collect();
        let mut ids = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            ids.push((
                Some(i),
                h.submit(&cdb::caw(lba, 1), DataDir::ToDevice(&caw_data(&x, w))),
            ));
            if i % 3 == 0 {
                // Interleave CAWs whose expected data never matches.
                ids.push((
                    None,
                    h.submit(&cdb::caw(lba, 1), DataDir::ToDevice(&caw_data(&never, &x))),
                ));
            }
        }
        let mut winners = Vec::new();
        for (i, id) in ids {
            let c = h.wait(id);
            if c.status == 0 {
                winners.push(i.expect("a CAW expecting data that never existed won"));
            } else {
                assert_check(&c, MISCOMPARE, "losing CAW");
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one CAW wins, got {winners:?}"
        );
        assert_eq!(
            read_blocks(&mut h, lba, 1),
            writes[winners[0]],
            "round {round}: the winner's data is on the medium"
        );
    }
}

#[test]
fn compare_and_write_is_atomic_against_a_write_to_its_block_and_does_not_block_other_writes() {
    let (_dir, backend, lun) = file_lun();
    let lba = 30;
    let gate = hold_reads_at(backend, lba * BS64);
    let mut h = Harness::new(
        Arc::clone(&gate) as Arc<dyn Backend>,
        lun,
        small_emu(),
        &dev_cfg(),
    );
    let x = pattern(30, BS);
    let y = pattern(31, BS);
    let z = pattern(32, BS);
    write_blocks(&mut h, lba, &x);
    // The CAW reads its block and is held there by the fault rule.
    let caw = h.submit(&cdb::caw(lba, 1), DataDir::ToDevice(&caw_data(&x, &y)));
    wait_until("CAW read held", Duration::from_secs(5), || gate.hung() == 1);
    // A write to its block must wait for it ...
    let same = h.submit(&cdb::write16(lba, 1, false), DataDir::ToDevice(&z));
    // ... a write elsewhere must not.
    let other = pattern(33, BS);
    let c = h.run(&cdb::write16(900, 1, false), DataDir::ToDevice(&other));
    assert_good(&c);
    h.pump(Duration::from_millis(200));
    assert_eq!(
        h.emu.outstanding(),
        2,
        "the CAW and the write to its block are still in flight"
    );
    gate.set_rules(Vec::new());
    assert_good(&h.wait(caw));
    assert_good(&h.wait(same));
    assert_eq!(
        read_blocks(&mut h, lba, 1),
        z,
        "the write ran after the CAW, not inside it"
    );
    assert_eq!(read_blocks(&mut h, 900, 1), other);
}

#[test]
fn compare_and_writes_waiting_on_one_block_do_not_starve_other_lbas() {
    // VMFS heartbeats (ATS) hammer one block from many hosts. While a CAW on that block waits
    // for a slow backend, further CAWs on the same block queue behind its lock; a READ or
    // WRITE to another LBA must still be served.
    let (_dir, backend, lun) = file_lun();
    let lba = 31;
    let gate = hold_reads_at(backend, lba * BS64);
    let cfg = DeviceConfig {
        workers: 2,
        max_inflight: 64,
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(
        Arc::clone(&gate) as Arc<dyn Backend>,
        lun,
        small_emu(),
        &cfg,
    );
    let x = pattern(40, BS);
    write_blocks(&mut h, lba, &x);
    let first = h.submit(&cdb::caw(lba, 1), DataDir::ToDevice(&caw_data(&x, &x)));
    wait_until("first CAW held", Duration::from_secs(5), || {
        gate.hung() == 1
    });
    let queued: Vec<u16> = (0..4)
        .map(|_| h.submit(&cdb::caw(lba, 1), DataDir::ToDevice(&caw_data(&x, &x))))
        .collect();
    let other = pattern(41, BS);
    let id = h.submit(&cdb::write16(700, 1, false), DataDir::ToDevice(&other));
    let t = Instant::now();
    let mut served = false;
    while t.elapsed() < Duration::from_secs(3) {
        h.pump(Duration::from_millis(20));
        if h.emu.outstanding() == 1 + queued.len() {
            served = true;
            break;
        }
    }
    gate.set_rules(Vec::new());
    for q in queued {
        assert_good(&h.wait(q));
    }
    assert_good(&h.wait(first));
    assert_good(&h.wait(id));
    assert!(
        served,
        "a WRITE to another LBA waited behind COMPARE AND WRITEs queued on one block's range lock"
    );
}

#[test]
fn write_same_with_unmap_and_unmap_read_back_as_zeros() {
    let (_dir, mut h, lun) = file_harness();
    let d = pattern(50, 16 * BS);
    // WRITE SAME(16) UNMAP with a zero block.
    write_blocks(&mut h, 100, &d);
    let zero = vec![0u8; BS];
    assert_good(&h.run(
        &cdb::write_same16(100, 16, true, false),
        DataDir::ToDevice(&zero),
    ));
    assert_eq!(
        read_blocks(&mut h, 100, 16),
        vec![0u8; 16 * BS],
        "WRITE SAME UNMAP reads zeros"
    );
    // WRITE SAME(16) NDOB.
    write_blocks(&mut h, 120, &d);
    assert_good(&h.run(
        &cdb::write_same16(120, 16, lun.caps.unmap, true),
        DataDir::None,
    ));
    assert_eq!(
        read_blocks(&mut h, 120, 16),
        vec![0u8; 16 * BS],
        "WRITE SAME NDOB reads zeros"
    );
    // WRITE SAME(10) of a pattern block.
    let blk = pattern(51, BS);
    assert_good(&h.run(&cdb::write_same10(140, 8, false), DataDir::ToDevice(&blk)));
    assert_eq!(
        read_blocks(&mut h, 140, 8),
        blk.repeat(8),
        "WRITE SAME replicates the block"
    );
    // UNMAP.
    write_blocks(&mut h, 200, &d);
    let p = cdb::unmap_params(&[(200, 8), (210, 6)]);
    let c = h.run(
        &cdb::unmap(u16::try_from(p.len()).unwrap()),
        DataDir::ToDevice(&p),
    );
    if lun.caps.unmap {
        assert_good(&c);
        let got = read_blocks(&mut h, 200, 16);
        assert_eq!(
            got[..8 * BS],
            vec![0u8; 8 * BS][..],
            "unmapped range 1 reads zeros"
        );
        assert_eq!(
            got[8 * BS..10 * BS],
            d[8 * BS..10 * BS],
            "gap between ranges kept"
        );
        assert_eq!(
            got[10 * BS..],
            vec![0u8; 6 * BS][..],
            "unmapped range 2 reads zeros"
        );
    } else {
        eprintln!("filesystem of the temp dir cannot punch holes: UNMAP must be unsupported");
        assert_check(&c, INVALID_OPCODE, "UNMAP without the capability");
    }
}

#[test]
fn verify_with_bytchk_matches_and_miscompares() {
    let (_dir, mut h, _lun) = file_harness();
    let d = pattern(60, 4 * BS);
    write_blocks(&mut h, 300, &d);
    assert_good(&h.run(&cdb::verify16(300, 4, true), DataDir::ToDevice(&d)));
    assert_good(&h.run(&cdb::verify10(300, 4, true), DataDir::ToDevice(&d)));
    assert_good(&h.run(&cdb::verify16(300, 4, false), DataDir::None));
    let mut wrong = d.clone();
    wrong[3 * BS + 17] ^= 0x01;
    let c = h.run(&cdb::verify16(300, 4, true), DataDir::ToDevice(&wrong));
    assert_check(&c, MISCOMPARE, "VERIFY miscompare");
    assert_eq!(
        Sense::from_bytes(&c.sense).unwrap().info,
        Some(u64::try_from(3 * BS + 17).unwrap()),
        "INFORMATION = offset"
    );
    assert_eq!(read_blocks(&mut h, 300, 4), d, "VERIFY changes nothing");
}

#[test]
fn synchronize_cache_is_good() {
    let (_dir, mut h, _lun) = file_harness();
    write_blocks(&mut h, 0, &pattern(70, BS));
    assert_good(&h.run(&cdb::sync16(), DataDir::None));
    let mut sync10 = [0u8; 10];
    sync10[0] = 0x35;
    assert_good(&h.run(&sync10, DataDir::None));
}

// ---------------------------------------------------------------------------------------------
// Ring-level faults
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_cdb_off_and_iovec_outside_the_data_area_complete_once_with_hardware_error() {
    let (_dir, backend, lun) = file_lun();
    let mut rig = Harness::kernel(small_emu());
    let d = pattern(80, BS);
    let ok_before = rig.submit(&cdb::write16(1, 1, false), DataDir::ToDevice(&d));
    let bad_iov = rig.submit(&cdb::write16(0, 1, false), DataDir::ToDevice(&d));
    let bad_cdb = rig.submit(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96));
    let cdb_far = rig.submit(&cdb::test_unit_ready(), DataDir::None);
    let iov_past_end = rig.submit(&cdb::read16(2, 1), DataDir::FromDevice(BS));
    let ok_after = rig.submit(&cdb::read16(1, 1), DataDir::FromDevice(BS));
    let at = |rig: &Harness, id| rig.emu.entry_at(id).expect("entry");
    let a = at(&rig, bad_iov);
    rig.emu.poke_u64(a, tcmu_sys::req::IOV, 0); // iovec base in the mailbox
    let a = at(&rig, bad_cdb);
    rig.emu.poke_u64(a, tcmu_sys::req::CDB_OFF, 0); // CDB in the mailbox
    let a = at(&rig, cdb_far);
    rig.emu.poke_u64(a, tcmu_sys::req::CDB_OFF, u64::MAX - 3); // far outside the mapping
    let a = at(&rig, iov_past_end);
    rig.emu.poke_u64(a, tcmu_sys::req::IOV + 8, 1 << 40); // length past the mapping
    rig.start("badent", backend, lun, &dev_cfg());
    assert_good(&rig.wait(ok_before));
    for (what, id) in [
        ("iovec outside data area", bad_iov),
        ("cdb_off 0", bad_cdb),
        ("cdb_off far", cdb_far),
        ("iovec length", iov_past_end),
    ] {
        let c = rig.wait(id);
        assert_check(&c, INTERNAL_TARGET_FAILURE, what);
    }
    let c = rig.wait(ok_after);
    assert_good(&c);
    assert_eq!(c.data_in, d);
    assert_eq!(rig.stats().bad_entries.load(Ordering::Relaxed), 4);
    assert!(
        !rig.stats().broken.load(Ordering::SeqCst),
        "a bad entry does not break the ring"
    );
    // Later commands still work, and the rejected write wrote nothing.
    let id = rig.submit(&cdb::read16(0, 1), DataDir::FromDevice(BS));
    let c = rig.wait(id);
    assert_good(&c);
    assert_eq!(
        c.data_in,
        vec![0u8; BS],
        "the rejected WRITE did not reach the medium"
    );
    rig.pump(Duration::from_millis(50));
    assert!(
        rig.done_ids().is_empty(),
        "no extra completions: {:?}",
        rig.done_ids()
    );
    assert_eq!(rig.emu.outstanding(), 0);
}

#[test]
fn corrupt_len_op_stops_reading_without_spinning_and_commands_in_flight_complete() {
    let (_dir, backend, lun) = file_lun();
    let gate = held(backend, "any:hang");
    let mut rig = Harness::kernel(small_emu());
    let a = rig.submit(&cdb::read16(0, 1), DataDir::FromDevice(BS));
    let b = rig.submit(&cdb::read16(1, 1), DataDir::FromDevice(BS));
    let bad = rig.submit(&cdb::test_unit_ready(), DataDir::None);
    let at = rig.emu.entry_at(bad).unwrap();
    rig.emu.corrupt_len_op(at, tcmu_sys::op::CMD); // length 0
    let name = "lenop";
    rig.start(name, Arc::clone(&gate) as Arc<dyn Backend>, lun, &dev_cfg());
    wait_until("ring marked broken", Duration::from_secs(5), || {
        rig.stats().broken.load(Ordering::SeqCst)
    });
    wait_until("both reads in the backend", Duration::from_secs(5), || {
        gate.hung() == 2
    });
    // More commands and doorbells after the corruption: not read, no spinning.
    let after = rig.submit(&cdb::test_unit_ready(), DataDir::None);
    let cpu0 = thread_cpu_secs(&format!("tcmu-d/{name}"));
    let t = Instant::now();
    for _ in 0..10 {
        let _ = rig.emu.submit(&cdb::test_unit_ready(), DataDir::None);
        rig.pump(Duration::from_millis(100));
    }
    let cpu = thread_cpu_secs(&format!("tcmu-d/{name}")) - cpu0;
    let wall = t.elapsed().as_secs_f64();
    assert!(
        cpu < 0.25 * wall,
        "device thread used {cpu:.2} s CPU in {wall:.2} s while broken"
    );
    assert!(
        rig.done_ids().is_empty(),
        "nothing completes while the reads are held"
    );
    assert_eq!(
        rig.stats().commands.load(Ordering::Relaxed),
        2,
        "nothing read past the corrupt entry"
    );
    // The commands read before the corruption still complete.
    gate.set_rules(Vec::new());
    assert_good(&rig.wait(a));
    assert_good(&rig.wait(b));
    rig.pump(Duration::from_millis(50));
    assert!(
        !rig.is_done(bad) && !rig.is_done(after),
        "entries past the corruption are not completed"
    );
    // And it stops promptly.
    let t = Instant::now();
    rig.dev.take().unwrap().join();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop of a broken device took {:?}",
        t.elapsed()
    );
}

#[test]
fn tmr_entries_between_commands_are_stepped_over_on_a_wrapping_ring() {
    let (_dir, backend, lun) = file_lun();
    let gate = hold_reads_at(backend, 0);
    // A 2 KiB ring wraps every ~15 entries: PADs, TMRs and CMDs at every position.
    let emu = EmuConfig {
        cmdr_size: 2048,
        data_size: 1 << 20,
        ..EmuConfig::default()
    };
    let mut h = Harness::new(Arc::clone(&gate) as Arc<dyn Backend>, lun, emu, &dev_cfg());
    // A command held in the backend, then aborted: the TMR names it. A command already in
    // the backend finishes normally; one the TMR reaches before it does is cancelled.
    let held = h.submit(&cdb::read16(0, 1), DataDir::FromDevice(BS));
    wait_until("read held", Duration::from_secs(5), || gate.hung() == 1);
    let mut tmrs = 0u64;
    let mut submit_tmr = |h: &mut Harness, ty: u8, ids: &[u16]| {
        while h.emu.submit_tmr(ty, ids).is_err() {
            h.pump(Duration::from_millis(5));
        }
        tmrs += 1;
    };
    submit_tmr(&mut h, tcmu_sys::tmr::ABORT_TASK, &[held]);
    let mut expect: std::collections::HashMap<u64, Vec<u8>> = std::collections::HashMap::new();
    for i in 0..300u32 {
        let lba = 1 + u64::from(i % 64);
        let d = pattern(u8::try_from(i % 256).unwrap(), BS);
        let w = h.submit(&cdb::write16(lba, 1, false), DataDir::ToDevice(&d));
        match i % 5 {
            0 => submit_tmr(&mut h, tcmu_sys::tmr::LUN_RESET, &[]),
            1 => submit_tmr(&mut h, tcmu_sys::tmr::ABORT_TASK, &[w]),
            2 => submit_tmr(&mut h, tcmu_sys::tmr::ABORT_TASK_SET, &[w, held, 999]),
            _ => {}
        }
        let c = h.wait(w);
        // Named by an ABORT TASK (SET): cancelled if the TMR arrived before the write reached
        // the backend, otherwise completed.
        let cancelled = c.status == 0x40 && matches!(i % 5, 1 | 2);
        if !cancelled {
            assert_good(&c);
            expect.insert(lba, d);
        }
        if i % 16 == 15 {
            let r = h.submit(&cdb::read16(lba, 1), DataDir::FromDevice(BS));
            let c = h.wait(r);
            assert_good(&c);
            let want = expect.get(&lba).cloned().unwrap_or_else(|| vec![0; BS]);
            assert_eq!(c.data_in, want, "read after write {i}");
        }
    }
    gate.set_rules(Vec::new());
    assert_good(&h.wait(held)); // it was in the backend when aborted: it finishes
    let st = h.stats();
    wait_until("every TMR seen", Duration::from_secs(5), || {
        st.tmrs() == tmrs
    });
    assert!(!st.broken.load(Ordering::SeqCst));
    assert_eq!(st.bad_entries.load(Ordering::Relaxed), 0);
    h.stop();
    assert_eq!(
        h.emu.outstanding(),
        0,
        "every command completed exactly once"
    );
}

#[test]
fn ring_and_data_area_smaller_than_the_queued_work_lose_nothing() {
    let (_dir, backend, lun) = file_lun();
    // 64 KiB of data area for 32 writes of 16 KiB; a 4 KiB ring.
    let emu = EmuConfig {
        cmdr_size: 4096,
        data_size: 64 * 1024,
        ..EmuConfig::default()
    };
    let mut h = Harness::new(backend, lun, emu, &dev_cfg());
    let per = 16 * 1024;
    let blocks = u32::try_from(per / BS).unwrap();
    let datas: Vec<Vec<u8>> = (0..32u8)
        .map(|i| pattern(i.wrapping_add(90), per))
        .collect();
    // Submitting all 32 needs several rounds of completions; ids are reused meanwhile, so
    // only the latest use of each id can be waited for. Losses show as missing completions
    // (the counters and `outstanding`) and as wrong data below.
    let ids: Vec<u16> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| {
            h.submit(
                &cdb::write16(u64::try_from(i).unwrap() * u64::from(blocks), blocks, false),
                DataDir::ToDevice(d),
            )
        })
        .collect();
    let latest: std::collections::BTreeSet<u16> = ids.into_iter().collect();
    for id in latest {
        assert_good(&h.wait(id));
    }
    assert_eq!(h.emu.outstanding(), 0, "every write completed");
    assert_eq!(h.stats().completed.load(Ordering::Relaxed), 32);
    assert_eq!(
        h.stats().errors.load(Ordering::Relaxed),
        0,
        "no write failed"
    );
    // Read everything back, four at a time (the data area holds exactly four).
    for batch in 0..8u64 {
        let ids: Vec<(usize, u16)> = (batch * 4..batch * 4 + 4)
            .map(|i| {
                let id = h.submit(
                    &cdb::read16(i * u64::from(blocks), blocks),
                    DataDir::FromDevice(per),
                );
                (usize::try_from(i).unwrap(), id)
            })
            .collect();
        for (i, id) in ids {
            let c = h.wait(id);
            assert_good(&c);
            assert!(c.data_in == datas[i], "write {i} read back differently");
        }
    }
    assert_eq!(h.stats().completed.load(Ordering::Relaxed), 64);
    h.stop();
    assert_eq!(h.emu.outstanding(), 0);
    assert_eq!(
        h.emu.data_blocks_free(),
        h.emu.data_blocks(),
        "every data block returned"
    );
}

#[test]
fn stop_with_a_hung_backend_returns_within_the_deadline() {
    let (_dir, backend, lun) = file_lun();
    let gate = held(backend, "any:hang");
    let deadline = Duration::from_secs(1);
    let cfg = DeviceConfig {
        workers: 2,
        max_inflight: 64,
        stop_deadline: deadline,
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(
        Arc::clone(&gate) as Arc<dyn Backend>,
        lun,
        small_emu(),
        &cfg,
    );
    let d = pattern(100, BS);
    let mut ids: Vec<u16> = (0..8)
        .map(|i| h.submit(&cdb::write16(i, 1, false), DataDir::ToDevice(&d)))
        .collect();
    // A CAW keeps a worker blocked inside the backend, too.
    ids.push(h.submit(&cdb::caw(50, 1), DataDir::ToDevice(&caw_data(&d, &d))));
    wait_until("all 9 operations held", Duration::from_secs(5), || {
        gate.hung() == 9
    });
    let dev = h.dev.take().unwrap();
    let t = Instant::now();
    dev.join();
    let took = t.elapsed();
    assert!(
        took < deadline + Duration::from_secs(1),
        "join took {took:?} with a {deadline:?} deadline"
    );
    assert!(
        took + Duration::from_millis(50) >= deadline,
        "join gave up before the deadline ({took:?})"
    );
    // Every command still in the backend was handed back to the kernel at the deadline
    // (BUSY, so the initiator retries), exactly once, with its data blocks kept (KEEP_BUF) so
    // a late backend transfer cannot land in a block reused by another command.
    h.pump(Duration::from_millis(100));
    for id in ids {
        let c = h.wait(id);
        assert_eq!(c.status, BUSY, "cmd {id}: BUSY at the stop deadline");
        assert!(
            c.kept,
            "cmd {id}: data blocks kept until the late I/O returns"
        );
    }
    // The backend answering the held operations now must be harmless: no second completion.
    gate.release_hung();
    std::thread::sleep(Duration::from_millis(100));
    h.pump(Duration::from_millis(50));
    assert_eq!(
        h.emu.outstanding(),
        9,
        "kept ids stay allocated until free_kept_buf"
    );
}

#[test]
fn stop_waits_for_commands_in_flight_and_completes_them() {
    let (_dir, backend, lun) = file_lun();
    let gate = held(backend, "any:hang");
    let cfg = DeviceConfig {
        stop_deadline: Duration::from_secs(10),
        ..dev_cfg()
    };
    let mut h = Harness::new(
        Arc::clone(&gate) as Arc<dyn Backend>,
        lun,
        small_emu(),
        &cfg,
    );
    let d = pattern(110, BS);
    let ids: Vec<u16> = (0..6)
        .map(|i| h.submit(&cdb::write16(i, 1, false), DataDir::ToDevice(&d)))
        .collect();
    wait_until("writes held", Duration::from_secs(5), || gate.hung() == 6);
    let dev = h.dev.take().unwrap();
    dev.stop();
    let opener = {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            gate.set_rules(Vec::new());
        })
    };
    let t = Instant::now();
    dev.join();
    opener.join().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "join waited for the commands in flight"
    );
    for id in ids {
        assert_good(&h.wait(id));
    }
    assert_eq!(
        h.emu.outstanding(),
        0,
        "in-flight commands were completed before the exit"
    );
}
