//! The device loop's own data path: file I/O through the device thread's io_uring (the same
//! data as the workers' path, deadlines and exactly-once with an operation still in the
//! kernel, a bounded stop), no backend I/O on the device thread at queue depth 1, and the
//! data-in-flight figure after deadline expiries.

// Test arithmetic on small constants: lossless casts are clearer than try_from here.
#![allow(clippy::cast_possible_truncation)]

use parking_lot::{Condvar, Mutex};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::fault::{Action, FaultBackend, OpSet, Rule};
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::{Backend, Caps, Io};
use tcmu_warden::device::{DeviceConfig, FreeKeptBuf};
use tcmu_warden::testing::{assert_good, cdb, sense_of, wait_until, Harness};

const BS: usize = 512;
const BLOCKS: u64 = 2048;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

fn lun(backend: &dyn Backend, write_cache: bool) -> tcmu_scsi::lun::LunInfo {
    let mut l = tcmu_scsi::lun::LunInfo::new(BS as u32, backend.size() / BS as u64, "loop");
    l.write_cache = write_cache;
    l
}

fn emu(data_size: u64) -> EmuConfig {
    EmuConfig {
        data_size,
        flags: 0xf,
        ..EmuConfig::default()
    }
}

/// Releases counted per command id.
fn freed_counter() -> (Arc<Mutex<Vec<u16>>>, FreeKeptBuf) {
    let freed = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&freed);
    (
        freed,
        FreeKeptBuf(Arc::new(move |id| {
            f.lock().push(id);
            Ok(())
        })),
    )
}

/// The same commands on a file through io_uring and through the workers give the same data,
/// and io_uring is really used when on (and not when off).
#[test]
fn file_io_through_io_uring_and_through_the_workers_gives_the_same_data() {
    let mut seen = Vec::new();
    for on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let b = Arc::new(FileBackend::open(&path, BLOCKS * BS as u64).unwrap());
        // Write cache off: every WRITE is FUA (RWF_DSYNC).
        let l = lun(b.as_ref(), on);
        let cfg = DeviceConfig {
            io_uring: on,
            ..DeviceConfig::default()
        };
        let mut h = Harness::new(b, l, emu(4 << 20), &cfg);
        let mut ids = Vec::new();
        // A batch of writes in one pass (submitted together), with and without FUA.
        for i in 0..32u64 {
            let d = pattern(i as u8, 8 * BS);
            ids.push(h.submit(&cdb::write16(i * 16, 8, i % 3 == 0), DataDir::ToDevice(&d)));
        }
        for id in ids.drain(..) {
            assert_good(&h.wait(id));
        }
        assert_good(&h.run(&cdb::sync16(), DataDir::None));
        // A 256 KiB write and read (many iovecs), then every block read back in one batch.
        let big = pattern(7, 512 * BS);
        assert_good(&h.run(&cdb::write16(1024, 512, false), DataDir::ToDevice(&big)));
        let c = h.run(&cdb::read16(1024, 512), DataDir::FromDevice(512 * BS));
        assert_good(&c);
        assert_eq!(c.data_in, big);
        for i in 0..32u64 {
            ids.push(h.submit(&cdb::read16(i * 16, 8), DataDir::FromDevice(8 * BS)));
        }
        let mut reads = Vec::new();
        for (i, id) in ids.drain(..).enumerate() {
            let c = h.wait(id);
            assert_good(&c);
            assert_eq!(
                c.data_in,
                pattern(i as u8, 8 * BS),
                "read {i} (io_uring {on})"
            );
            reads.push(c.data_in);
        }
        // A READ into a longer buffer: the rest is zeros and read_len says how much.
        let c = h.run(&cdb::read16(0, 1), DataDir::FromDevice(4 * BS));
        assert_good(&c);
        assert_eq!(&c.data_in[..BS], &pattern(0, BS)[..]);
        assert!(c.data_in[BS..].iter().all(|&x| x == 0));
        // The file shrinks under the LUN (a block device node, or an admin's truncate):
        // what lies past its end reads as zeros, across the end too.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1024 * BS as u64 + 512)
            .unwrap();
        let c = h.run(&cdb::read16(1024, 4), DataDir::FromDevice(4 * BS));
        assert_good(&c);
        assert_eq!(&c.data_in[..BS], &big[..BS]);
        assert!(
            c.data_in[BS..].iter().all(|&x| x == 0),
            "zeros past the end"
        );
        let used = h.stats().uring_submitted.load(Ordering::Relaxed);
        if on {
            assert!(
                used >= 68,
                "READ, WRITE and SYNC went through io_uring: {used}"
            );
        } else {
            assert_eq!(used, 0, "io_uring off: the workers did it");
        }
        h.stop();
        seen.push(reads);
    }
    assert_eq!(seen[0], seen[1]);
}

/// A file on tmpfs: its WRITEs are written at once on the device thread (no io_uring worker,
/// see `device/uring.rs`), READs still go through io_uring. Plain and FUA writes (write cache
/// off: every WRITE is FUA), single and batched, large ones with many iovecs and ones that
/// extend past what was written, all read back; the file holds them.
#[test]
fn file_io_on_tmpfs_writes_at_once_and_reads_back() {
    for write_cache in [true, false] {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let path = dir.path().join("lun.img");
        let b = Arc::new(FileBackend::open(&path, BLOCKS * BS as u64).unwrap());
        let l = lun(b.as_ref(), write_cache);
        let mut h = Harness::new(b, l, emu(4 << 20), &DeviceConfig::default());
        let mut ids = Vec::new();
        for i in 0..32u64 {
            let d = pattern(i as u8 ^ 0x55, 8 * BS);
            ids.push(h.submit(&cdb::write16(i * 16, 8, i % 3 == 0), DataDir::ToDevice(&d)));
        }
        for id in ids.drain(..) {
            assert_good(&h.wait(id));
        }
        let big = pattern(9, 512 * BS);
        assert_good(&h.run(&cdb::write16(1024, 512, false), DataDir::ToDevice(&big)));
        assert_good(&h.run(&cdb::sync16(), DataDir::None));
        let c = h.run(&cdb::read16(1024, 512), DataDir::FromDevice(512 * BS));
        assert_good(&c);
        assert_eq!(c.data_in, big);
        for i in 0..32u64 {
            let c = h.run(&cdb::read16(i * 16, 8), DataDir::FromDevice(8 * BS));
            assert_good(&c);
            assert_eq!(c.data_in, pattern(i as u8 ^ 0x55, 8 * BS), "block {i}");
        }
        assert!(h.stats().uring_submitted.load(Ordering::Relaxed) >= 66);
        h.stop();
        let on_file = std::fs::read(&path).unwrap();
        assert_eq!(&on_file[1024 * BS..1536 * BS], &big[..]);
        assert_eq!(&on_file[16 * BS..24 * BS], &pattern(1 ^ 0x55, 8 * BS)[..]);
    }
}

/// A doorbell whose first `ack` waits (at most 10 s) until the test opens the gate, so the
/// commands queued meanwhile are all in the ring when the device drains it; counts kicks.
struct GatedBell {
    bell: tcmu_ring::emu::EmuDoorbell,
    gate: Arc<(Mutex<bool>, Condvar)>,
    kicks: Arc<AtomicUsize>,
}

impl tcmu_ring::Doorbell for GatedBell {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.bell.raw_fd()
    }
    fn ack(&self) -> std::io::Result<bool> {
        let (open, cv) = &*self.gate;
        let mut o = open.lock();
        if !*o {
            let _ = cv.wait_for(&mut o, Duration::from_secs(10));
        }
        drop(o);
        self.bell.ack()
    }
    fn kick(&self) -> std::io::Result<()> {
        self.kicks.fetch_add(1, Ordering::SeqCst);
        self.bell.kick()
    }
}

/// Large WRITEs written at once on the loop (a file on tmpfs) are handed back while the ring
/// is still being drained: 16 WRITEs of 64 KiB found in one pass are completed in several
/// publishes (one per 256 KiB read), not all at its end, so the kernel and the initiator
/// need not wait for the whole batch (a 1 MiB sequential stream at hw_max_sectors 128 went
/// from 0.76x to about 1.2x tcmu-runner's MB/s; bench/vm/README.md).
#[test]
fn a_long_drain_of_large_writes_publishes_before_its_end() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let b = Arc::new(FileBackend::open(&dir.path().join("lun.img"), BLOCKS * BS as u64).unwrap());
    let l = lun(b.as_ref(), true);
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let kicks = Arc::new(AtomicUsize::new(0));
    let mut h = Harness::kernel(emu(4 << 20));
    let (g, k) = (Arc::clone(&gate), Arc::clone(&kicks));
    h.start_with_doorbell("test/early", b, l, &DeviceConfig::default(), move |bell| {
        Box::new(GatedBell {
            bell,
            gate: g,
            kicks: k,
        })
    });
    // Past the device's first pass (which runs at start, without an event to acknowledge).
    std::thread::sleep(Duration::from_millis(100));
    let mut ids = Vec::new();
    for i in 0..16u64 {
        let d = pattern(i as u8, 128 * BS);
        ids.push(h.submit(&cdb::write16(i * 128, 128, false), DataDir::ToDevice(&d)));
    }
    // Every WRITE is in the ring; let the device's first pass run.
    {
        let (open, cv) = &*gate;
        *open.lock() = true;
        cv.notify_all();
    }
    for id in ids {
        assert_good(&h.wait(id));
    }
    let n = kicks.load(Ordering::SeqCst);
    assert!(
        n >= 4,
        "1 MiB of WRITEs drained in one pass was published {n} time(s), not per 256 KiB"
    );
    for i in [0u64, 7, 15] {
        let c = h.run(&cdb::read16(i * 128, 128), DataDir::FromDevice(128 * BS));
        assert_eq!(
            c.data_in,
            pattern(i as u8, 128 * BS),
            "WRITE {i} reads back"
        );
    }
    h.stop();
}

/// A LUN whose "file" is a FIFO: a READ waits in the kernel (inside io_uring) until the test
/// writes into the FIFO. Returns the harness, the FIFO's writer end and the kept-buffer log.
fn hung_file_lun(
    deadline: Duration,
    stop: Duration,
) -> (
    Harness,
    std::fs::File,
    Arc<Mutex<Vec<u16>>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let b = Arc::new(FileBackend::open(&path, BLOCKS * BS as u64).unwrap());
    let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let (freed, free) = freed_counter();
    let cfg = DeviceConfig {
        command_deadline: Some(deadline),
        free_kept_buf: Some(free),
        stop_deadline: stop,
        ..DeviceConfig::default()
    };
    let l = tcmu_scsi::lun::LunInfo::new(BS as u32, BLOCKS, "fifo");
    let h = Harness::new(b, l, emu(1 << 20), &cfg);
    (h, writer, freed, dir)
}

/// A READ that hangs inside io_uring is completed once at its deadline (retryable, buffer
/// kept); its late completion only releases the kept buffer, once; the device serves on.
#[test]
fn a_read_hung_in_io_uring_completes_once_at_its_deadline_and_its_late_end_frees_the_buffer() {
    let deadline = Duration::from_millis(300);
    let (mut h, mut writer, freed, _dir) = hung_file_lun(deadline, Duration::from_secs(5));
    let t = Instant::now();
    let id = h.submit(&cdb::read16(0, 1), DataDir::FromDevice(BS));
    let c = h.wait(id);
    let waited = t.elapsed();
    assert_eq!(sense_of(&c), (0x02, 0x04, 0x0A), "retryable NOT READY");
    assert!(c.kept);
    assert!(waited >= deadline && waited < deadline * 10, "{waited:?}");
    assert_eq!(h.stats().uring_submitted.load(Ordering::Relaxed), 1);
    // Meanwhile the device answers other commands.
    assert_good(&h.run(&cdb::test_unit_ready(), DataDir::None));
    assert!(
        freed.lock().is_empty(),
        "held while the kernel holds the read"
    );
    // The read ends late: its buffer is released, exactly once, and nothing is completed again.
    writer.write_all(&[0x5a; BS]).unwrap();
    wait_until("the kept buffer released", Duration::from_secs(10), || {
        !freed.lock().is_empty()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(*freed.lock(), vec![id]);
    assert!(
        h.take_done(Duration::from_millis(200)).is_empty(),
        "no second completion"
    );
    wait_until("nothing in flight", Duration::from_secs(5), || {
        h.stats().in_flight() == 0 && h.stats().data_used() == 0
    });
    let t = Instant::now();
    h.stop();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "nothing left to wait for"
    );
}

/// A stop with a READ still inside io_uring returns by the stop deadline (the command is
/// completed with BUSY), and the late end of the read afterwards harms nothing.
#[test]
fn stop_with_a_read_hung_in_io_uring_is_bounded() {
    let stop = Duration::from_millis(500);
    let (mut h, mut writer, _freed, _dir) = hung_file_lun(Duration::from_secs(60), stop);
    let id = h.submit(&cdb::read16(0, 1), DataDir::FromDevice(BS));
    std::thread::sleep(Duration::from_millis(100));
    let dev = h.dev.take().unwrap();
    let t = Instant::now();
    dev.join();
    let took = t.elapsed();
    assert!(took >= stop && took < stop * 6, "stop took {took:?}");
    let c = h.wait(id);
    assert_eq!(c.status, tcmu_scsi::status::BUSY);
    // The abandoned read ends now; its waiter thread takes it.
    writer.write_all(&[0u8; BS]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
}

/// A backend that completes inline (like the file backend without io_uring) and blocks in
/// `submit` until released: what a hung NFS-backed file does to `preadv`.
struct Blocking {
    inner: RamBackend,
    held: Mutex<bool>,
    cv: Condvar,
    calls: AtomicUsize,
}

impl Blocking {
    fn release(&self) {
        *self.held.lock() = false;
        self.cv.notify_all();
    }
}

impl Backend for Blocking {
    fn describe(&self) -> String {
        "blocking".into()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn completes_inline(&self) -> bool {
        true
    }
    fn submit(&self, io: Io) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut held = self.held.lock();
        while *held {
            self.cv.wait(&mut held);
        }
        drop(held);
        self.inner.submit(io);
    }
}

/// Issue 12 item 6: at queue depth 1 a READ on a backend that completes inline and hangs is
/// completed at its deadline, other commands are answered, and stop is bounded: no backend
/// I/O runs on the device thread.
#[test]
fn a_hung_backend_at_queue_depth_1_still_gets_its_deadline_and_a_bounded_stop() {
    let deadline = Duration::from_millis(300);
    let stop = Duration::from_millis(500);
    let b = Arc::new(Blocking {
        inner: RamBackend::new(BLOCKS * BS as u64),
        held: Mutex::new(true),
        cv: Condvar::new(),
        calls: AtomicUsize::new(0),
    });
    let (freed, free) = freed_counter();
    let cfg = DeviceConfig {
        command_deadline: Some(deadline),
        free_kept_buf: Some(free),
        stop_deadline: stop,
        io_uring: false,
        ..DeviceConfig::default()
    };
    let l = lun(b.as_ref(), true);
    let mut h = Harness::new(Arc::clone(&b) as Arc<dyn Backend>, l, emu(1 << 20), &cfg);
    h.set_wait_limit(Duration::from_secs(10));
    // Queue depth 1: one READ alone in the ring.
    let t = Instant::now();
    let c = h.run(&cdb::read16(0, 1), DataDir::FromDevice(BS));
    let waited = t.elapsed();
    assert_eq!(
        sense_of(&c),
        (0x02, 0x04, 0x0A),
        "completed at its deadline"
    );
    assert!(waited < deadline * 10, "{waited:?}");
    assert_eq!(
        b.calls.load(Ordering::SeqCst),
        1,
        "it did reach the backend"
    );
    assert_good(&h.run(&cdb::test_unit_ready(), DataDir::None));
    let dev = h.dev.take().unwrap();
    let t = Instant::now();
    dev.join();
    assert!(t.elapsed() < stop * 6, "stop bounded: {:?}", t.elapsed());
    b.release();
    drop(freed);
}

/// A backend whose submit returns at once and records the thread that called it (the device
/// thread when the device submits directly, a worker otherwise).
struct Direct {
    inner: RamBackend,
    from_device_thread: AtomicUsize,
    from_elsewhere: AtomicUsize,
}

impl Backend for Direct {
    fn describe(&self) -> String {
        "direct".into()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn completes_inline(&self) -> bool {
        false
    }
    fn submit_returns_at_once(&self) -> bool {
        true
    }
    fn submit(&self, io: Io) {
        let on_device = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("tcmu-d/"));
        if on_device {
            self.from_device_thread.fetch_add(1, Ordering::SeqCst);
        } else {
            self.from_elsewhere.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.submit(io);
    }
}

/// Issue 12 item 10: more than 32 MiB of commands expire and come back late; afterwards the
/// data in flight reads 0 again and READ/WRITE are still submitted from the device thread.
#[test]
fn data_in_flight_returns_to_zero_after_expiries_and_direct_submission_stays() {
    let deadline = Duration::from_millis(200);
    let direct = Arc::new(Direct {
        inner: RamBackend::new(64 << 20),
        from_device_thread: AtomicUsize::new(0),
        from_elsewhere: AtomicUsize::new(0),
    });
    let fault = Arc::new(FaultBackend::new(
        Arc::clone(&direct) as Arc<dyn Backend>,
        vec![Rule::new(OpSet::READ, Action::Hang)],
    ));
    let (freed, free) = freed_counter();
    let cfg = DeviceConfig {
        command_deadline: Some(deadline),
        free_kept_buf: Some(free),
        ..DeviceConfig::default()
    };
    let l = lun(fault.as_ref(), true);
    let mut h = Harness::new(
        Arc::clone(&fault) as Arc<dyn Backend>,
        l,
        emu(48 << 20),
        &cfg,
    );
    // 40 reads of 1 MiB, all held by the backend: 40 MiB expire.
    let n = 40;
    let ids: Vec<u16> = (0..n)
        .map(|i| h.submit(&cdb::read16(i * 2048, 2048), DataDir::FromDevice(1 << 20)))
        .collect();
    for id in &ids {
        let c = h.wait(*id);
        assert_eq!(sense_of(&c), (0x02, 0x04, 0x0A));
    }
    assert_eq!(h.stats().deadline_expired(), n);
    assert!(
        h.stats().data_used() >= 40 << 20,
        "the kept buffers are still in use: {}",
        h.stats().data_used()
    );
    // The backend answers again: the late reads come back, their buffers are released.
    fault.set_rules(Vec::new());
    wait_until(
        "every kept buffer released",
        Duration::from_secs(10),
        || freed.lock().len() == ids.len(),
    );
    wait_until("data in flight back at 0", Duration::from_secs(5), || {
        h.stats().data_used() == 0 && h.stats().in_flight() == 0
    });
    // Direct submission is still used for new READs and WRITEs.
    let before = direct.from_device_thread.load(Ordering::SeqCst);
    let elsewhere = direct.from_elsewhere.load(Ordering::SeqCst);
    let d = pattern(3, 4096);
    assert_good(&h.run(&cdb::write16(8, 8, false), DataDir::ToDevice(&d)));
    let c = h.run(&cdb::read16(8, 8), DataDir::FromDevice(4096));
    assert_good(&c);
    assert_eq!(c.data_in, d);
    assert_eq!(direct.from_device_thread.load(Ordering::SeqCst), before + 2);
    assert_eq!(direct.from_elsewhere.load(Ordering::SeqCst), elsewhere);
    h.stop();
}

/// Issue 12 item 16: a WRITE parked behind an expired write's fence until its own deadline is
/// an outlier whose time is `parked`, not `publish`; a command queued for a worker shows
/// `queued` time.
#[test]
fn a_write_parked_behind_a_fence_is_attributed_to_parked() {
    let deadline = Duration::from_millis(300);
    let fault = Arc::new(FaultBackend::new(
        Arc::new(RamBackend::new(BLOCKS * BS as u64)),
        vec![Rule {
            at: Some(0),
            ..Rule::new(OpSet::WRITE, Action::Hang)
        }],
    ));
    let (_freed, free) = freed_counter();
    let cfg = DeviceConfig {
        command_deadline: Some(deadline),
        free_kept_buf: Some(free),
        outlier_threshold: Some(Duration::from_millis(100)),
        ..DeviceConfig::default()
    };
    let l = lun(fault.as_ref(), true);
    let mut h = Harness::new(
        Arc::clone(&fault) as Arc<dyn Backend>,
        l,
        emu(1 << 20),
        &cfg,
    );
    let d = pattern(1, BS);
    // The first write hangs in the backend and expires: its blocks are fenced.
    let c = h.run(&cdb::write16(0, 1, false), DataDir::ToDevice(&d));
    assert_eq!(sense_of(&c), (0x02, 0x04, 0x0A));
    // The second write to the same block waits behind the fence until its own deadline.
    let c = h.run(&cdb::write16(0, 1, false), DataDir::ToDevice(&d));
    assert_eq!(sense_of(&c), (0x02, 0x04, 0x0A));
    let outliers = h.stats().recent_outliers.snapshot();
    let o = outliers.last().expect("the parked write is an outlier");
    assert!(
        o.parked >= deadline * 9 / 10,
        "parked {:?} of {:?}",
        o.parked,
        o.total()
    );
    assert!(
        o.publish < Duration::from_millis(50),
        "publish {:?}",
        o.publish
    );
    assert!(o.backend.is_zero(), "never reached the backend");
    fault.set_rules(Vec::new());
    h.stop();
}
