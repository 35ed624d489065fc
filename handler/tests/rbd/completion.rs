//! Where RBD operations complete (handler/src/backend/rbd/backend.rs, docs/rbd.md
//! "Completions"): a successful one on librbd's callback thread, in the callback; a failed
//! one, and a FUA write while librbd's cache is on (write + flush), on the backend's
//! completion thread (`rbd-io-*`). Every `Io` completes exactly once, including when the last
//! reference to the backend goes with a completion on librbd's thread.

use super::*;
use tcmu_ring::IoVecs;
use tcmu_warden::backend::io::{IoOwner, IoResult};
use tcmu_warden::backend::{Io, IoOp};

/// What an owner saw: the result and the name of the thread that completed it.
type Seen = (IoResult, String);

/// Reports its completion; optionally holds a reference to the backend, dropped with it on
/// the completing thread (as a device's last command holds its device, and so its backend).
struct Owner {
    tx: crossbeam_channel::Sender<Seen>,
    _keep: Option<Arc<dyn Backend>>,
}

impl IoOwner for Owner {
    fn io_done(self: Box<Self>, result: IoResult, _iov: IoVecs) {
        let name = std::thread::current().name().unwrap_or("").to_string();
        let _ = self.tx.send((result, name));
    }
}

/// Submit `op` on `buf` (kept alive and untouched by the caller until its completion arrives).
fn submit(
    backend: &Arc<dyn Backend>,
    op: IoOp,
    off: u64,
    buf: &mut [u8],
    tx: &crossbeam_channel::Sender<Seen>,
    keep: bool,
) {
    let mut iov = IoVecs::with_capacity(1);
    if !buf.is_empty() {
        // SAFETY: every caller keeps `buf` alive and untouched until this operation's
        // completion arrived on `tx`.
        unsafe { iov.push_buffer(buf, buf.len()) };
    }
    let owner = Owner {
        tx: tx.clone(),
        _keep: keep.then(|| Arc::clone(backend)),
    };
    backend.submit(Io::new(op, off, buf.len() as u64, iov, Box::new(owner)));
}

/// A write of `data` at offset 0, FUA or not; its completion arrives on `tx`.
fn write_at_zero(
    backend: &Arc<dyn Backend>,
    fua: bool,
    data: &mut [u8],
    tx: &crossbeam_channel::Sender<Seen>,
) {
    submit(backend, IoOp::Write { fua }, 0, data, tx, false);
}

fn wait(rx: &crossbeam_channel::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the operation completes")
}

fn remove_when_closed(admin: &Arc<Cluster>, name: &str) {
    let io = IoCtx::new(admin, "rbd", None).unwrap();
    // Removal fails while a client still has the image open (its watch): closed within 15 s.
    let t = Instant::now();
    while let Err(e) = io.remove_image(name) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "image {name} still open: {e}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn a_successful_operation_completes_on_librbds_thread_a_failed_one_on_the_completion_thread() {
    let size: u64 = 8 << 20;
    let (admin, name) = fresh_image("cbthread", size);
    let backend = open_lun(&rbd_cfg(&name, ""), size, None);
    let (tx, rx) = crossbeam_channel::unbounded();
    let me = std::thread::current().name().unwrap_or("").to_string();
    let mut data = vec![0xa5u8; 4096];
    let mut back = vec![0u8; 4096];
    // One at a time. A completion can come back while the submitting thread is still inside
    // `rbd_aio_writev` holding the slot (a thread descheduled on a loaded host), which hands
    // it to the completion thread: so most, not all, complete on librbd's thread (none did
    // before completing in the callback).
    let mut on_librbd = 0;
    const N: usize = 20;
    for i in 0..N {
        let op = IoOp::Write { fua: i % 2 == 0 };
        submit(&backend, op, 8192, &mut data, &tx, false);
        let (r, thread) = wait(&rx);
        assert_eq!(r, Ok(()), "{op:?}");
        assert_ne!(thread, me, "{op:?} completed at submission");
        if !thread.starts_with("rbd-io") {
            on_librbd += 1;
        }
    }
    eprintln!("{on_librbd} of {N} writes completed on librbd's callback thread");
    assert!(
        on_librbd * 2 > N,
        "only {on_librbd} of {N} writes completed on librbd's callback thread"
    );
    submit(&backend, IoOp::Flush, 0, &mut [], &tx, false);
    // A flush with nothing to flush may complete before `rbd_aio_flush` returned (the slot
    // still held: the completion thread then finishes it): only its result is asserted.
    assert_eq!(wait(&rx).0, Ok(()));
    submit(&backend, IoOp::Read, 8192, &mut back, &tx, false);
    assert_eq!(wait(&rx).0, Ok(()));
    assert_eq!(back, data);
    // Beyond the end of the image: librbd fails it (EINVAL), possibly from inside the
    // `rbd_aio_readv` call, while the submitting thread holds the slot: completed once, with
    // the error, on the completion thread or the submitting one, never lost nor doubled.
    submit(
        &backend,
        IoOp::Read,
        size + (1 << 20),
        &mut back,
        &tx,
        false,
    );
    let (r, thread) = wait(&rx);
    assert!(r.is_err(), "a read past the end failed: {r:?}");
    assert!(
        thread.starts_with("rbd-io") || thread == me,
        "a failure completes on the completion thread (or at submission): {thread:?}"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing completes twice"
    );
    assert_eq!(backend.in_flight(), 0);
    drop(backend);
    remove_when_closed(&admin, &name);
}

/// While librbd's cache is on for the image (an override), a FUA write is write + flush; the
/// flush is a librbd call, never made on librbd's callback thread: the completion thread
/// issues it (counted) and the write completes once the flush returned. With the cache off
/// (the clients' setting) no flush follows.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn a_fua_write_is_flushed_only_while_librbds_cache_is_on() {
    let size: u64 = 8 << 20;
    let flushes = |m: &Metrics| metric(&m.encode(), "tcmu_warden_rbd_fua_flushes_total{");
    let mut data = vec![0x3cu8; 4096];
    let (tx, rx) = crossbeam_channel::unbounded();
    // The client's default: cache off, no flush.
    let (admin, plain) = fresh_image("cbnofua", size);
    let m = Metrics::new();
    let backend = open_lun(&rbd_cfg(&plain, ""), size, Some(&m));
    write_at_zero(&backend, true, &mut data, &tx);
    assert_eq!(wait(&rx).0, Ok(()));
    assert_eq!(flushes(&m), 0, "no flush while librbd's cache is off");
    drop(backend);
    remove_when_closed(&admin, &plain);
    // An image override turns it on.
    let (admin, name) = fresh_image("cbfua", size);
    let st = std::process::Command::new("timeout")
        .args(["20", "rbd", "-c", &conf(), "config", "image", "set"])
        .arg(format!("rbd/{name}"))
        .args(["rbd_cache", "true"])
        .status()
        .expect("run the rbd CLI");
    assert!(st.success(), "rbd config image set failed: {st}");
    let m = Metrics::new();
    let backend = open_lun(&rbd_cfg(&name, ""), size, Some(&m));
    for i in 1..=3u64 {
        write_at_zero(&backend, true, &mut data, &tx);
        let (r, _) = wait(&rx);
        assert_eq!(r, Ok(()));
        assert_eq!(
            flushes(&m),
            i,
            "one flush per FUA write, before it completes"
        );
    }
    // Without FUA there is nothing to flush.
    write_at_zero(&backend, false, &mut data, &tx);
    // Which thread completes it is not asserted: with the cache on librbd may complete the
    // write before `rbd_aio_writev` returned, while the slot is still held, which hands it to
    // the completion thread.
    assert_eq!(wait(&rx).0, Ok(()));
    assert_eq!(flushes(&m), 3, "no flush after a write without FUA");
    drop(backend);
    remove_when_closed(&admin, &name);
}

/// The commands in flight hold the only references to the backend (a device removed with I/O
/// in flight): the last one drops it on librbd's callback thread. Every command completes
/// once, nothing hangs, and the image is closed (off librbd's thread).
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn the_last_reference_dropped_on_librbds_thread_closes_the_image_elsewhere() {
    let size: u64 = 8 << 20;
    let (admin, name) = fresh_image("cbdrop", size);
    let backend = open_lun(&rbd_cfg(&name, ""), size, None);
    let (tx, rx) = crossbeam_channel::unbounded();
    const N: usize = 32;
    let mut bufs: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; 4096]).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        submit(
            &backend,
            IoOp::Write { fua: false },
            (i * 4096) as u64,
            b,
            &tx,
            true,
        );
    }
    let t = Instant::now();
    drop(backend);
    let mut done = 0;
    while done < N {
        let (r, _) = wait(&rx);
        assert_eq!(r, Ok(()));
        done += 1;
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing completes twice"
    );
    eprintln!("{N} writes completed in {:?}", t.elapsed());
    remove_when_closed(&admin, &name);
    drop(bufs);
}
