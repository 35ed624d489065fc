//! The RBD backend against a real Ceph cluster, through the emulated kernel ring.
//!
//! Ignored by default: `tests/ceph/run.sh` starts a throwaway single-node cluster
//! (`tests/ceph/cluster.sh`), exports `TCMU_RBD_CONF` (its ceph.conf) and
//! `TCMU_RBD_CLUSTER_DIR`, and runs these with `--include-ignored --test-threads=1` (the
//! client registry is process-wide, and the OSD freeze test stops the only OSD).
#![cfg(feature = "rbd")]
// Test arithmetic on small constants: lossless casts are clearer than try_from here.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use ceph_rbd::{Cluster, ConnectOptions, Image, IoCtx};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_warden::backend::rbd::client;
use tcmu_warden::backend::registry;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::shadow::{seed_from_env, Mix, Shadow, Share};
use tcmu_warden::testing::{assert_good, cdb, lba_status_at, sense_of, Harness, LunSpec};
use tcmu_warden_supervisor::metrics::Metrics;

const NEEDS: &str = "needs a Ceph cluster: tests/ceph/run.sh";
const BS: usize = 512;

fn conf() -> String {
    std::env::var("TCMU_RBD_CONF")
        .unwrap_or_else(|_| panic!("TCMU_RBD_CONF is not set: run tests/ceph/run.sh"))
}

fn cluster_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var("TCMU_RBD_CLUSTER_DIR")
            .unwrap_or_else(|_| panic!("TCMU_RBD_CLUSTER_DIR is not set: run tests/ceph/run.sh")),
    )
}

/// A separate admin client (not the backend's shared one).
fn admin() -> Arc<Cluster> {
    Cluster::connect(&ConnectOptions {
        id: None,
        conf: Some(conf().into()),
        set: vec![],
    })
    .expect("connect to the test cluster")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn create_image(cluster: &Arc<Cluster>, pool: &str, ns: Option<&str>, name: &str, size: u64) {
    let io = IoCtx::new(cluster, pool, ns).unwrap();
    io.create_image(name, size).unwrap();
}

/// The common set-up of the tests: the admin client of the test cluster (up: tests/ceph/run.sh)
/// and a fresh image `<prefix>-<pid>-<nanos>` of `size` bytes in pool `rbd`.
fn fresh_image(prefix: &str, size: u64) -> (Arc<Cluster>, String) {
    let admin = admin();
    let name = unique(prefix);
    create_image(&admin, "rbd", None, &name, size);
    (admin, name)
}

/// The cfgstring of a LUN on image `name` of pool `rbd` of the test cluster, then `opts`
/// (`;key=value...`).
fn rbd_cfg(name: &str, opts: &str) -> String {
    format!("rbd/{name};conf={}{opts}", conf())
}

fn open_lun(cfg: &str, size: u64, metrics: Option<&Arc<Metrics>>) -> Arc<dyn Backend> {
    tcmu_warden::daemon::open_backend("rbd", cfg, "user_0/rbdlun", size, metrics)
        .unwrap_or_else(|e| panic!("open rbd/{cfg}: {e}"))
}

fn harness(backend: Arc<dyn Backend>, size: u64) -> Harness {
    harness_wc(backend, size, true)
}

/// `write_cache` false is what Linux sees by default on a user backstore (WCE 0): every
/// write is then FUA (write + flush only while librbd's cache is on for the image, see
/// docs/rbd.md).
fn harness_wc(backend: Arc<dyn Backend>, size: u64, write_cache: bool) -> Harness {
    let mut lun = LunSpec::new(size, BS as u32)
        .hw_max_sectors(2048)
        .write_cache(write_cache)
        .serial("rbd-test")
        .lun_info(backend.as_ref());
    lun.max_compare_write_blocks = 8;
    let emu_cfg = EmuConfig {
        cmdr_size: 256 * 1024,
        data_size: 16 << 20,
        scatter: true,
        ..EmuConfig::default()
    };
    let dev_cfg = DeviceConfig {
        workers: 3,
        max_inflight: 128,
        ..DeviceConfig::default()
    };
    Harness::new(backend, lun, emu_cfg, &dev_cfg)
}

fn is_not_ready_transition(c: &Completed) -> bool {
    c.status == 2 && sense_of(c) == (0x02, 0x04, 0x0A)
}

/// Retry a command like Linux sd does on NOT READY 04/0A and BUSY; returns the final
/// completion and how many retries it took.
fn run_retrying(
    h: &mut Harness,
    cdb: &[u8],
    dir: DataDir<'_>,
    limit: Duration,
) -> (Completed, u32) {
    let t = Instant::now();
    let mut retries = 0;
    loop {
        let c = h.run(cdb, dir);
        let retry = is_not_ready_transition(&c) || c.status == 0x08;
        if !retry || t.elapsed() > limit {
            return (c, retries);
        }
        retries += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Read the whole image through a separate librbd client and compare with `shadow`.
fn verify_with_librbd(name: &str, shadow: &[u8]) {
    let c = admin();
    let io = IoCtx::new(&c, "rbd", None).unwrap();
    let img = Image::open(&io, name, None, true).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let target = ceph_rbd::AioTarget::new(7, tx);
    let mut got = vec![0u8; shadow.len()];
    let iov = [libc::iovec {
        iov_base: got.as_mut_ptr().cast(),
        iov_len: got.len(),
    }];
    let mut comp = ceph_rbd::AioCompletion::new(&target).unwrap();
    // SAFETY: `got` stays alive and untouched until the completion is received below.
    unsafe { img.aio_readv(&iov, 0, &mut comp) }.unwrap();
    let done = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("read completes");
    comp.fired();
    assert_eq!(done.tag, 7);
    assert!(done.ret >= 0, "librbd read failed: {}", done.ret);
    let first = got.iter().zip(shadow).position(|(a, b)| a != b);
    assert!(
        first.is_none(),
        "image {name} differs from the shadow model at byte {first:?} (read by a separate librbd client)"
    );
}

/// A random mix of every command, in batches of disjoint ranges, against the shadow model.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn integrity_random_mix_against_a_shadow_model() {
    let _ = NEEDS;
    let seed = seed_from_env();
    // 12 MiB over 4 MiB objects: commands cross object boundaries.
    let size: u64 = 12 << 20;
    let (_admin, name) = fresh_image("integrity", size);
    let metrics = Metrics::new();
    let backend = open_lun(&rbd_cfg(&name, ""), size, Some(&metrics));
    assert!(!backend.completes_inline());
    assert!(backend.caps().unmap && backend.caps().write_zeroes);
    let mut h = harness(backend, size);
    let mix = Mix {
        batches: 120,
        max_depth: 24,
        read: Share::new(35, 256),
        write: Share::new(35, 256),
        unmap: Share::new(8, 512),
        write_same: Share::new(10, 1024),
        caw: Share::new(8, 8),
        sync: Share::new(4, 0),
        fua: 0.3,
        unmap_ranges: 1,
        write_same_data: true,
        write_same_unmap: true,
        ndob: false,
        // Half of the ranges across a 4 MiB object boundary (8192 blocks).
        boundary: Some(8192),
    };
    let mut shadow = Shadow::new(size / BS as u64, BS);
    let counts = shadow.run_mix(&mut h, &mix, seed);
    shadow.assert_reads_back(&mut h, 2048, &format!("seed {seed}"));
    let text = metrics.encode();
    assert!(
        text.contains("tcmu_warden_rbd_op_duration_seconds_count{device=\"user_0/rbdlun\",op=\"write\",subtype=\"rbd\"}"),
        "per-image op latency is exported:\n{text}"
    );
    h.stop();
    assert_eq!(h.emu.outstanding(), 0, "every command completed");
    drop(h);
    // The last reference to the backend may be dropped on its own completion thread (a
    // command's completion), which then finishes by itself: its series go when it does.
    let t = Instant::now();
    while metrics.encode().contains("device=\"user_0/rbdlun\"") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a closed LUN's series are removed:\n{}",
            metrics.encode()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    verify_with_librbd(&name, shadow.bytes());
    eprintln!("{counts:?}");
    assert!(counts.covers(&mix), "every kind was exercised: {counts:?}");
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn wrong_pool_image_snapshot_or_option_is_refused_naming_it() {
    let (_admin, name) = fresh_image("cfg", 8 << 20);
    let c = conf();
    let t = Duration::from_secs(20);
    let err = |cfg: &str| {
        tcmu_warden::daemon::open_backend("rbd", cfg, "user_0/x", 4 << 20, None)
            .err()
            .unwrap_or_else(|| panic!("{cfg} was accepted"))
            .to_string()
    };
    let e = err(&format!("nopool/{name};conf={c}"));
    assert!(e.contains("pool \"nopool\" not found"), "{e}");
    let e = err(&format!("rbd/noimage;conf={c}"));
    assert!(
        e.contains("image \"noimage\" not found in pool \"rbd\""),
        "{e}"
    );
    let e = err(&format!("rbd/{name}@nosnap;conf={c}"));
    assert!(e.contains("snapshot \"nosnap\""), "{e}");
    let e = err(&format!("rbd/nons/{name};conf={c}"));
    assert!(e.contains("namespace \"nons\""), "{e}");
    let e = err(&rbd_cfg(&name, ";osd_op_timout=5"));
    assert!(e.contains("unknown option osd_op_timout=5"), "{e}");
    let e = err(&format!("rbd/{name};conf=/nonexistent/ceph.conf"));
    assert!(e.contains("rados_conf_read_file"), "{e}");
    let e = tcmu_warden::daemon::open_backend(
        "rbd",
        &format!("rbd/{name};conf={c}"),
        "user_0/x",
        16 << 20,
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("smaller than the LUN's dev_size"), "{e}");
    // check_config says the same, within its bound, and accepts a good cfgstring.
    registry::check_config("rbd", &rbd_cfg(&name, ";osd_op_timeout=5"), t).unwrap();
    let e = registry::check_config("rbd", &format!("nopool/{name};conf={c}"), t).unwrap_err();
    assert!(e.contains("pool \"nopool\" not found"), "{e}");
    let e = registry::check_config("rbd", &format!("rbd/noimage;conf={c}"), t).unwrap_err();
    assert!(e.contains("image \"noimage\""), "{e}");
    let e = registry::check_config("rbd", &rbd_cfg(&name, ";bogus=1"), t).unwrap_err();
    assert!(e.contains("unknown option bogus=1"), "{e}");
    // A cluster that does not answer: the check is bounded.
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.conf");
    std::fs::write(
        &dead,
        format!(
            "[global]\nmon host = 127.0.0.1:9\nkeyring = {}/keyring\n",
            cluster_dir().display()
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let e = registry::check_config(
        "rbd",
        &format!("rbd/{name};conf={}", dead.display()),
        Duration::from_secs(2),
    )
    .unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        t0.elapsed()
    );
    assert!(
        e.contains("no answer from the cluster within 2 s") || e.contains("connecting"),
        "{e}"
    );
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn namespaces_snapshots_and_one_shared_client() {
    let admin = admin();
    let name = unique("ns");
    create_image(&admin, "rbd", Some("ns1"), &name, 4 << 20);
    let other = unique("shared");
    create_image(&admin, "rbd", None, &other, 4 << 20);
    let c = conf();
    let a = open_lun(&format!("rbd/ns1/{name};conf={c}"), 4 << 20, None);
    let b = open_lun(&format!("rbd/{other};conf={c}"), 4 << 20, None);
    assert_eq!(client::count(), 1, "two LUNs, one RADOS client");
    let mut h = harness(Arc::clone(&a), 4 << 20);
    let data = vec![0xabu8; 8 * BS];
    assert_good(&h.run(&cdb::write16(16, 8, false), DataDir::ToDevice(&data)));
    let r = h.run(&cdb::read16(16, 8), DataDir::FromDevice(8 * BS));
    assert_good(&r);
    assert_eq!(r.data_in, data);
    h.stop();
    drop(h);
    // Snapshot of the namespaced image: served read-only, with the snapshot's data.
    {
        let io = IoCtx::new(&admin, "rbd", Some("ns1")).unwrap();
        Image::open(&io, &name, None, false)
            .unwrap()
            .snap_create("s1")
            .unwrap();
    }
    let s = open_lun(&format!("rbd/ns1/{name}@s1;conf={c}"), 4 << 20, None);
    assert!(!s.caps().unmap, "a snapshot is read-only");
    let mut h = harness(s, 4 << 20);
    let r = h.run(&cdb::read16(16, 8), DataDir::FromDevice(8 * BS));
    assert_good(&r);
    assert_eq!(r.data_in, data);
    let w = h.run(&cdb::write16(16, 8, false), DataDir::ToDevice(&data));
    assert_eq!(
        sense_of(&w),
        (0x07, 0x27, 0x00),
        "DATA PROTECT / WRITE PROTECTED"
    );
    h.stop();
    drop((a, b));
}

/// Write batches of random data at queue depth, retrying NOT READY 04/0A like Linux does;
/// returns how many retries were needed.
fn write_batches(
    h: &mut Harness,
    rng: &mut StdRng,
    shadow: &mut Shadow,
    batches: usize,
    mut between: impl FnMut(usize),
) -> u32 {
    let blocks = shadow.blocks();
    let mut retries = 0;
    for b in 0..batches {
        between(b);
        let mut ops = Vec::new();
        for i in 0..8u64 {
            // Disjoint: batch slot i writes within its own eighth of the LUN.
            let n = rng.gen_range(1..=64u64);
            let lba = i * blocks / 8 + rng.gen_range(0..blocks / 8 - n);
            let mut d = vec![0u8; n as usize * BS];
            rng.fill(&mut d[..]);
            let id = h.submit(&cdb::write16(lba, n as u32, false), DataDir::ToDevice(&d));
            ops.push((lba, n, d, id));
        }
        // Take every completion of the batch before retrying any: a retry may reuse the id
        // of a completed command not yet taken.
        let done: Vec<_> = ops.iter().map(|(_, _, _, id)| h.wait(*id)).collect();
        for ((lba, n, d, _), mut c) in ops.into_iter().zip(done) {
            if is_not_ready_transition(&c) || c.status == 0x08 {
                let (c2, r) = run_retrying(
                    h,
                    &cdb::write16(lba, n as u32, false),
                    DataDir::ToDevice(&d),
                    Duration::from_secs(60),
                );
                retries += r + 1;
                c = c2;
            }
            assert_good(&c);
            shadow.write(lba, &d);
        }
    }
    retries
}

/// Read the whole LUN through the ring (1 MiB commands) and compare with `shadow`.
fn assert_reads_back(h: &mut Harness, shadow: &Shadow) {
    shadow.assert_reads_back(h, 2048, "read back");
}

fn blocklist_ls() -> String {
    let out = std::process::Command::new("timeout")
        .args(["20", "ceph", "-c", &conf(), "osd", "blocklist", "ls"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The RBD incident: a second client breaks the image's exclusive lock (which blocklists this
/// daemon's client) while writes are in flight. The commands that hit it complete with a
/// retryable status, the backend reopens on a fresh client by itself, the data verifies, the
/// event is counted and the daemon's own stale blocklist entry is removed.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn blocklisted_by_a_lock_breaker_recovers_by_itself() {
    blocklisted_by_a_lock_breaker(true);
}

/// The same with the write cache off (Linux's default view of a user backstore: WCE 0), so
/// every write is FUA (a plain write while librbd's cache is off, docs/rbd.md). A flush used
/// to switch librbd's cache from
/// write-through to write-around, which acknowledges writes before the OSD has them: writes
/// in flight at the blocklisting were then acknowledged GOOD and lost (found by the VM
/// scenario, tests/vm/scenarios/rbd.sh: fio read zeros back).
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn blocklisted_with_the_write_cache_off_loses_no_acknowledged_write() {
    blocklisted_by_a_lock_breaker(false);
}

fn blocklisted_by_a_lock_breaker(write_cache: bool) {
    let size: u64 = 8 << 20;
    let (admin, name) = fresh_image("blocklist", size);
    let metrics = Metrics::new();
    let backend = open_lun(&rbd_cfg(&name, ""), size, Some(&metrics));
    let mut h = harness_wc(Arc::clone(&backend), size, write_cache);
    let mut rng = StdRng::seed_from_u64(5);
    let mut shadow = Shadow::new(size / BS as u64, BS);
    // Take the lock with a first write, then remember who we are.
    write_batches(&mut h, &mut rng, &mut shadow, 2, |_| {});
    let io = IoCtx::new(&admin, "rbd", None).unwrap();
    let breaker = Image::open(&io, &name, None, false).unwrap();
    let owners = breaker.lock_owners().unwrap();
    assert_eq!(owners.owners.len(), 1, "the LUN holds the lock: {owners:?}");
    let victim = owners.owners[0].clone();
    let before = client::live();
    assert_eq!(before.len(), 1);
    // With librbd's cache on, a write is acknowledged before the OSD has it once any flush
    // was seen (write-around), and the blocklisting would lose it.
    assert_eq!(client::live_option("rbd_cache"), ["false"]);
    let old_addr = before[0].1.clone();
    // Break the lock from another thread while batches keep going.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        breaker.lock_break(true, &victim).expect("lock break");
        drop(breaker);
        Instant::now()
    });
    let t0 = Instant::now();
    let retries = write_batches(&mut h, &mut rng, &mut shadow, 60, |_| {
        std::thread::sleep(Duration::from_millis(20));
    });
    let broke_at = t.join().unwrap();
    eprintln!(
        "lock broken {:?} into the run; {retries} retries; run took {:?}",
        broke_at.duration_since(t0),
        t0.elapsed()
    );
    assert!(
        retries > 0,
        "some commands saw the blocklisting and were retried"
    );
    let after = client::live();
    assert_eq!(after.len(), 1, "one client again");
    assert_eq!(
        client::live_option("rbd_cache"),
        ["false"],
        "librbd's cache must be off on the fresh client too"
    );
    assert_ne!(after[0].1, old_addr, "a fresh client");
    // Everything written, through both clients, reads back.
    assert_reads_back(&mut h, &shadow);
    let text = metrics.encode();
    let line = |n: &str| {
        text.lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{n} missing in\n{text}"))
            .to_string()
    };
    assert!(
        line("tcmu_warden_rbd_blocklist_events_total{").ends_with(" 1"),
        "{text}"
    );
    assert!(
        line("tcmu_warden_rbd_reopens_total{device=\"user_0/rbdlun\",result=\"ok\"")
            .ends_with(" 1"),
        "{text}"
    );
    let d = backend.diagnose().join("\n");
    eprintln!("diagnose:\n{d}");
    assert!(
        d.contains("blocklisted 1 time(s), reopened 1 time(s)"),
        "{d}"
    );
    assert!(d.contains("exclusive lock: held by this daemon"), "{d}");
    // The daemon's own stale entry is removed once the old client is gone.
    let t = Instant::now();
    loop {
        let ls = blocklist_ls();
        if !ls.contains(&old_addr) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{old_addr} still blocklisted:\n{ls}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        metrics.encode().contains("tcmu_warden_rbd_blocklist_cleanups_total{device=\"user_0/rbdlun\",result=\"ok\",subtype=\"rbd\"} 1")
    );
    h.stop();
    drop(h);
    drop(backend);
    verify_with_librbd(&name, shadow.bytes());
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A client in another process (python3-rbd) that opens image `name` and keeps it open,
/// so its watch is on the header; registered in the service map as a tcmu-runner style
/// gateway `peer-gw:rbd/<name>` on that client when `register`. Returns it (killed on
/// drop) and its instance id (`client.<id>`).
fn image_client(name: &str, register: bool) -> (Child, u64) {
    use std::io::BufRead;
    let script = r"
import rados, rbd, sys, time
c = rados.Rados(conffile=sys.argv[1]); c.connect()
io = c.open_ioctx('rbd'); img = rbd.Image(io, sys.argv[2])
if sys.argv[3] == 'register':
    c.service_daemon_register('tcmu-runner', 'peer-gw:rbd/' + sys.argv[2],
        {'pool_name': 'rbd', 'image_name': sys.argv[2], 'daemon_type': 'portal',
         'daemon_prefix': 'peer-gw'})
print(c.get_instance_id(), flush=True)
time.sleep(600)
";
    let mode = if register { "register" } else { "plain" };
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, &conf(), name, mode])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with python3-rbd (scripts/install-ceph-deps.sh)");
    let out = child.stdout.take().unwrap();
    let child = Child(child);
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    let id: u64 = line.trim().parse().expect("the client's instance id");
    (child, id)
}

/// The `diagnose` line that names watcher `client.<id>`.
fn watcher_line(d: &[String], id: u64) -> &str {
    d.iter()
        .find(|l| l.contains(&format!("watcher client.{id} at ")))
        .unwrap_or_else(|| panic!("client.{id} not named: {d:#?}"))
}

/// The watcher metric of the test LUN counts exactly one possibly stale watcher.
fn assert_one_possibly_stale(metrics: &Metrics) {
    assert!(
        metrics
            .encode()
            .contains("tcmu_warden_rbd_watchers{device=\"user_0/rbdlun\",kind=\"possibly_stale\",subtype=\"rbd\"} 1"),
        "{}",
        metrics.encode()
    );
}

/// The stale-watcher incident: a client that opened the image and froze (SIGSTOP) keeps its
/// watch on the header; the backend names it, with its address, as possibly stale.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn a_frozen_clients_watch_is_named_possibly_stale() {
    let (_admin, name) = fresh_image("watch", 4 << 20);
    let (child, id) = image_client(&name, false);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let metrics = Metrics::new();
    let backend = open_lun(&rbd_cfg(&name, ""), 4 << 20, Some(&metrics));
    let d = backend.diagnose();
    eprintln!("diagnose:\n{}", d.join("\n"));
    let stale = watcher_line(&d, id);
    assert!(stale.contains("possibly stale"), "{stale}");
    assert!(
        stale.contains("ceph osd blocklist add 127.0.0.1:"),
        "names the address: {stale}"
    );
    assert!(
        !d.iter()
            .any(|l| l.contains("possibly stale") && !l.contains(&format!("client.{id} "))),
        "only the frozen client is suspect (our own watch is not): {d:#?}"
    );
    assert_one_possibly_stale(&metrics);
    drop(child);
}

/// A gateway pair: the peer gateway (another process that opened the image and registered it
/// in the Ceph service map on that client, as tcmu-runner does) holds no lock, yet its watch is
/// named as a gateway, never as possibly stale with blocklisting advice; an unregistered
/// client beside it still is possibly stale.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn a_peer_gateway_in_the_service_map_is_not_called_a_stale_watcher() {
    wait_for_mgr();
    let (_admin, name) = fresh_image("peer", 4 << 20);
    let (_peer, peer_id) = image_client(&name, true);
    let (_other, other_id) = image_client(&name, false);
    wait_until(Duration::from_secs(60), || {
        ceph_json(&["service", "dump"]).contains(&format!("\"peer-gw:rbd/{name}\":"))
    })
    .expect("the peer appears in `ceph service dump`");
    let metrics = Metrics::new();
    let backend = open_lun(&rbd_cfg(&name, ""), 4 << 20, Some(&metrics));
    let d = backend.diagnose();
    eprintln!("diagnose:\n{}", d.join("\n"));
    let peer = watcher_line(&d, peer_id);
    assert!(
        peer.contains("another gateway") && !peer.contains("blocklist"),
        "the peer gateway: {peer}"
    );
    assert!(
        watcher_line(&d, other_id).contains("possibly stale"),
        "{d:#?}"
    );
    assert_one_possibly_stale(&metrics);
}

struct Frozen(nix::unistd::Pid);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Tiers: with osd_op_timeout=3, an OSD frozen for longer gives retryable completions within
/// the tier (NOT READY 04/0A after ~3 s, not a hang), and I/O resumes when it thaws.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn a_frozen_osd_gives_retryable_completions_within_the_tier() {
    let size: u64 = 4 << 20;
    let (_admin, name) = fresh_image("freeze", size);
    let backend = open_lun(&rbd_cfg(&name, ";osd_op_timeout=3"), size, None);
    assert_eq!(backend.op_timeout(), Some(Duration::from_secs(3)));
    backend.ping().unwrap();
    let mut h = harness(Arc::clone(&backend), size);
    let mut rng = StdRng::seed_from_u64(9);
    let mut shadow = Shadow::new(size / BS as u64, BS);
    write_batches(&mut h, &mut rng, &mut shadow, 2, |_| {});
    let pid: i32 = std::fs::read_to_string(cluster_dir().join("run/osd.0.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let osd = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(osd, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let frozen = Frozen(osd);
    let t0 = Instant::now();
    let data = vec![0x3cu8; 16 * BS];
    let w = h.submit(&cdb::write16(64, 16, false), DataDir::ToDevice(&data));
    let r = h.submit(&cdb::read16(0, 16), DataDir::FromDevice(16 * BS));
    let f = h.submit(&cdb::sync16(), DataDir::None);
    for id in [w, r, f] {
        let c = h.wait(id);
        let took = t0.elapsed();
        eprintln!("completed after {took:?}: status {:#x}", c.status);
        if c.status == 0 && id == f {
            continue; // a flush with nothing to write back may not reach the OSD
        }
        assert!(
            is_not_ready_transition(&c),
            "retryable NOT READY 04/0A, got {:#x}",
            c.status
        );
        assert!(
            took >= Duration::from_millis(2500),
            "not before the tier: {took:?}"
        );
        assert!(took < Duration::from_secs(8), "within the tier: {took:?}");
    }
    assert!(
        backend.ping().is_err(),
        "the probe fails while the OSD is frozen"
    );
    std::thread::sleep(Duration::from_secs(1));
    drop(frozen); // SIGCONT
    let t1 = Instant::now();
    let (c, retries) = run_retrying(
        &mut h,
        &cdb::write16(64, 16, false),
        DataDir::ToDevice(&data),
        Duration::from_secs(60),
    );
    assert_good(&c);
    shadow.write(64, &data);
    eprintln!(
        "resumed {:?} after the thaw ({retries} retries)",
        t1.elapsed()
    );
    assert_reads_back(&mut h, &shadow);
    h.stop();
}

/// Write `data` at `off` through a plain librbd handle (synchronously).
fn librbd_write(img: &Image, off: u64, data: &[u8]) -> i64 {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let target = ceph_rbd::AioTarget::new(1, tx);
    let iov = [libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    }];
    let mut comp = ceph_rbd::AioCompletion::new(&target).unwrap();
    // SAFETY: `data` stays alive and unchanged until the completion is received below.
    unsafe { img.aio_writev(&iov, off, &mut comp) }.unwrap();
    let done = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("write completes");
    comp.fired();
    done.ret
}

/// The sum of the series whose line starts with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn acquired(m: &Metrics) -> u64 {
    metric(
        &m.encode(),
        "tcmu_warden_rbd_lock_transitions_total{device=\"user_0/rbdlun\",subtype=\"rbd\",to=\"acquired\"}",
    )
}

/// Two gateways (two LUNs on two RADOS clients) write the same image alternately. librbd's
/// own cooperative lock moves on every alternation (measured first with two plain librbd
/// handles); with the explicit lock and `lock_hold`, the lock changes hands at most about
/// once per hold, the peers' early requests are counted as damped, and everything written
/// through both verifies.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn two_gateways_writing_alternately_swap_the_lock_at_most_once_per_hold() {
    let size: u64 = 4 << 20;
    let (admin, name) = fresh_image("pingpong", size);
    let run_for = Duration::from_secs(3);
    // Without damping: librbd's cooperative handover, two separate clients.
    let undamped = {
        let (c1, c2) = (admin.clone(), self::admin());
        let i1 = IoCtx::new(&c1, "rbd", None).unwrap();
        let i2 = IoCtx::new(&c2, "rbd", None).unwrap();
        let a = Image::open(&i1, &name, None, false).unwrap();
        let b = Image::open(&i2, &name, None, false).unwrap();
        let (mut transitions, mut writes, mut last) = (0u64, 0u64, None);
        let t = Instant::now();
        while t.elapsed() < run_for {
            for (who, img) in [(0, &a), (1, &b)] {
                assert!(librbd_write(img, 0, &[who as u8; 4096]) >= 0);
                writes += 1;
                if img.is_lock_owner().unwrap() && last != Some(who) {
                    transitions += 1;
                    last = Some(who);
                }
            }
        }
        eprintln!(
            "librbd's cooperative lock, two clients writing alternately for {run_for:?}: \
             {writes} writes, {transitions} lock transitions"
        );
        transitions
    };
    // With damping: two LUNs, on two clients (a different osd_op_timeout: not shared).
    let hold = Duration::from_secs(1);
    let (ma, mb) = (Metrics::new(), Metrics::new());
    let a = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=30;lock_hold=1"),
        size,
        Some(&ma),
    );
    let b = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=31;lock_hold=1"),
        size,
        Some(&mb),
    );
    assert_eq!(client::count(), 2, "two gateways, two clients");
    let mut ha = harness(Arc::clone(&a), size);
    let mut hb = harness(Arc::clone(&b), size);
    let mut rng = StdRng::seed_from_u64(55);
    let mut shadow = Shadow::new(size / BS as u64, BS);
    shadow.write(0, &[1u8; 4096]); // the undamped run's last write (client b)
    let blocks = size / BS as u64;
    let (mut writes, mut busy) = ([0u32; 2], 0u32);
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    while t.elapsed() < run_for {
        for (i, h) in [&mut ha, &mut hb].into_iter().enumerate() {
            let n = rng.gen_range(1..=32u64);
            let lba = rng.gen_range(0..blocks - n);
            let mut d = vec![0u8; n as usize * BS];
            rng.fill(&mut d[..]);
            let t0 = Instant::now();
            let (c, retries) = run_retrying(
                h,
                &cdb::write16(lba, n as u32, false),
                DataDir::ToDevice(&d),
                Duration::from_secs(30),
            );
            assert_good(&c);
            slowest = slowest.max(t0.elapsed());
            busy += retries;
            writes[i] += 1;
            shadow.write(lba, &d);
        }
    }
    let elapsed = t.elapsed();
    let (acq_a, acq_b) = (acquired(&ma), acquired(&mb));
    let requests = |m: &Metrics, r: &str| {
        metric(
            &m.encode(),
            &format!(
                "tcmu_warden_rbd_lock_requests_total{{device=\"user_0/rbdlun\",result=\"{r}\""
            ),
        )
    };
    let damped = requests(&ma, "damped") + requests(&mb, "damped");
    let yielded = requests(&ma, "yielded") + requests(&mb, "yielded");
    eprintln!(
        "damped (lock_hold={hold:?}) for {elapsed:?}: writes {writes:?}, lock acquisitions \
         {acq_a} + {acq_b}, peer requests damped {damped}, yielded {yielded}, {busy} BUSY \
         retries, slowest write {slowest:?}; undamped: {undamped} transitions"
    );
    let bound = elapsed.as_secs_f64() / hold.as_secs_f64() + 2.0;
    assert!(
        (acq_a + acq_b) as f64 <= bound,
        "at most one handover per hold: {} acquisitions in {elapsed:?}",
        acq_a + acq_b
    );
    assert!(acq_a >= 1 && acq_b >= 1, "both gateways got the lock");
    assert!(damped >= 1, "early requests were held back");
    assert!(yielded >= 1, "and answered after the hold");
    assert!(
        undamped >= 3 * (acq_a + acq_b),
        "librbd's own handover moves the lock far more often ({undamped}) than the damped one ({})",
        acq_a + acq_b
    );
    // Everything both gateways wrote is there, read through either.
    assert_reads_back(&mut hb, &shadow);
    ha.stop();
    hb.stop();
    drop((ha, hb, a, b));
    verify_with_librbd(&name, shadow.bytes());
}

fn lock_checks(m: &Metrics, check: &str) -> u64 {
    metric(
        &m.encode(),
        &format!(
            "tcmu_warden_rbd_lock_checks_total{{check=\"{check}\",device=\"user_0/rbdlun\",subtype=\"rbd\"}}"
        ),
    )
}

/// The holder of the explicit lock, alone on the image (the only watcher of its header),
/// reads no request record and checks its lock every `ALONE_CHECK_EVERY` (10 s) instead of
/// every `CHECK_EVERY` (250 ms), listing the watchers every `WATCH_EVERY` (2 s): each of these
/// is a round trip to the header's OSD (docs/rbd.md, "The explicit lock's checks"). Once a
/// peer gateway opens the image, the holder sees it at its next listing, reads the peer's
/// request and hands the lock over as before.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn a_sole_holder_reads_no_lock_request_until_a_peer_watches() {
    let size: u64 = 4 << 20;
    let (_admin, name) = fresh_image("solehold", size);
    let ma = Metrics::new();
    let a = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=30;lock_hold=1"),
        size,
        Some(&ma),
    );
    let mut ha = harness(Arc::clone(&a), size);
    let da = vec![0xa1u8; 8 * BS];
    assert_good(&ha.run(&cdb::write16(0, 8, false), DataDir::ToDevice(&da)));
    assert_eq!(acquired(&ma), 1);
    let alone = Duration::from_secs(3);
    std::thread::sleep(alone);
    let (watchers, owner, request) = (
        lock_checks(&ma, "watchers"),
        lock_checks(&ma, "owner"),
        lock_checks(&ma, "request"),
    );
    eprintln!("alone for {alone:?}: watcher listings {watchers}, owner checks {owner}, request reads {request}");
    assert_eq!(request, 0, "nobody else watches: no request record read");
    assert!(
        (2..=3).contains(&watchers),
        "the header's watchers are listed on acquisition and every 2 s: {watchers}"
    );
    assert!(
        (1..=2).contains(&owner),
        "the lock checked once in the first 10 s, not every 250 ms: {owner}"
    );
    // A peer gateway opens the image and writes: A sees it watching, reads its request (A's
    // lock_hold has passed) and hands the lock over.
    let mb = Metrics::new();
    let b = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=31;lock_hold=1"),
        size,
        Some(&mb),
    );
    let mut hb = harness(Arc::clone(&b), size);
    let db = vec![0xb1u8; 8 * BS];
    let t0 = Instant::now();
    let (c, retries) = run_retrying(
        &mut hb,
        &cdb::write16(0, 8, false),
        DataDir::ToDevice(&db),
        Duration::from_secs(30),
    );
    assert_good(&c);
    let took = t0.elapsed();
    let yielded = metric(
        &ma.encode(),
        "tcmu_warden_rbd_lock_requests_total{device=\"user_0/rbdlun\",result=\"yielded\"",
    );
    eprintln!(
        "peer's write took {took:?} ({retries} BUSY retries); A read the record {} times, yielded {yielded}",
        lock_checks(&ma, "request")
    );
    assert!(
        lock_checks(&ma, "request") >= 1,
        "a peer watches: the record is read"
    );
    assert_eq!(yielded, 1, "and the lock handed over");
    assert_eq!(acquired(&mb), 1);
    // Seen at A's next listing (<= 2 s), read at once, handed over; the peer retries every
    // 50 ms: within lock_timeout (5 s), no BUSY.
    assert!(
        took < Duration::from_secs(4),
        "handed over within the bound: {took:?}"
    );
    assert_eq!(
        retries, 0,
        "no BUSY: the peer got the lock within lock_timeout"
    );
    let r = ha.run(&cdb::read16(0, 8), DataDir::FromDevice(8 * BS));
    assert_good(&r);
    assert_eq!(r.data_in, db);
    ha.stop();
    hb.stop();
}

/// A write through a gateway whose peer holds the lock (and does not hand it over before
/// its `lock_hold`) completes with BUSY after `lock_timeout`, not later; retried, it
/// succeeds once the peer has handed the lock over.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn a_write_waiting_for_the_lock_past_the_bound_gets_busy() {
    let size: u64 = 4 << 20;
    let (_admin, name) = fresh_image("lockwait", size);
    let mb = Metrics::new();
    let a = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=30;lock_hold=4"),
        size,
        None,
    );
    let b = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=31;lock_timeout=1"),
        size,
        Some(&mb),
    );
    let mut ha = harness(Arc::clone(&a), size);
    let mut hb = harness(Arc::clone(&b), size);
    let da = vec![0xaau8; 8 * BS];
    let db = vec![0xbbu8; 8 * BS];
    let t_hold = Instant::now();
    assert_good(&ha.run(&cdb::write16(0, 8, false), DataDir::ToDevice(&da)));
    let t0 = Instant::now();
    let w = hb.run(&cdb::write16(8, 8, false), DataDir::ToDevice(&db));
    let took = t0.elapsed();
    eprintln!(
        "the waiting write completed after {took:?}: status {:#x}",
        w.status
    );
    assert_eq!(w.status, 0x08, "BUSY (retried by the initiator)");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "after lock_timeout (1 s), not later: {took:?}"
    );
    assert_eq!(
        metric(&mb.encode(), "tcmu_warden_rbd_lock_wait_timeouts_total{"),
        1
    );
    // Retried like Linux does, it goes through once A's 4 s hold is over.
    let (w, retries) = run_retrying(
        &mut hb,
        &cdb::write16(8, 8, false),
        DataDir::ToDevice(&db),
        Duration::from_secs(20),
    );
    assert_good(&w);
    let got_at = t_hold.elapsed();
    eprintln!("the retried write succeeded {got_at:?} after A took the lock ({retries} retries)");
    assert!(
        got_at >= Duration::from_millis(3900),
        "not before A's lock_hold: {got_at:?}"
    );
    assert_eq!(acquired(&mb), 1);
    let d = b.diagnose().join("\n");
    assert!(d.contains("exclusive lock: held by this daemon"), "{d}");
    let r = ha.run(&cdb::read16(0, 16), DataDir::FromDevice(16 * BS));
    assert_good(&r);
    assert_eq!(r.data_in, [da, db].concat());
    ha.stop();
    hb.stop();
}

/// `ceph <args> -f json` against the test cluster (bounded); stdout.
fn ceph_json(args: &[&str]) -> String {
    let out = std::process::Command::new("timeout")
        .args(["20", "ceph", "-c", &conf(), "--connect-timeout", "10"])
        .args(args)
        .args(["-f", "json"])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("run the ceph CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `f` every 250 ms until it is true or `limit` passes; returns how long it took.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// Wait (up to 2 minutes) until the test cluster's manager is available.
fn wait_for_mgr() {
    assert!(
        wait_until(Duration::from_secs(120), || ceph_json(&["mgr", "stat"])
            .contains("\"available\":true"))
        .is_some(),
        "the test cluster's mgr never became available"
    );
}

/// An open LUN is a `tcmu-runner` daemon `<host>:<pool>/<image>` in the manager's service
/// map with the metadata the dashboard reads, its status says whether it holds the lock,
/// `ceph -s` counts it as a portal, and it leaves the map when the LUN closes.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn an_open_lun_is_a_gateway_in_the_ceph_service_map() {
    wait_for_mgr();
    let size: u64 = 4 << 20;
    let (admin, name) = fresh_image("svcmap", size);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let daemon = format!("{host}:rbd/{name}");
    let image_id = {
        let io = IoCtx::new(&admin, "rbd", None).unwrap();
        Image::open(&io, &name, None, true).unwrap().id().unwrap()
    };
    let backend = open_lun(&rbd_cfg(&name, ""), size, None);
    let listed = wait_until(Duration::from_secs(30), || {
        ceph_json(&["service", "dump"]).contains(&format!("\"{daemon}\":"))
    })
    .expect("the LUN appears in `ceph service dump`");
    let dump = ceph_json(&["service", "dump"]);
    let entry = &dump[dump.find(&format!("\"{daemon}\":")).unwrap()..];
    let entry = &entry[..entry.find("\"task_status\"").unwrap_or(entry.len())];
    for kv in [
        "\"daemon_type\":\"portal\"".to_string(),
        format!("\"daemon_prefix\":\"{host}\""),
        "\"pool_name\":\"rbd\"".to_string(),
        format!("\"image_name\":\"{name}\""),
        format!("\"image_id\":\"{image_id}\""),
        // The I/O client whose watch a peer gateway sees (docs/rbd.md, "Watchers").
        "\"io_client_id\":\"".to_string(),
        "\"io_client_addr\":\"127.0.0.1:".to_string(),
    ] {
        assert!(
            entry.contains(&kv),
            "{kv} in the service map entry: {entry}"
        );
    }
    assert!(
        dump.contains("\"tcmu-runner\""),
        "under the service the dashboard reads: {dump}"
    );
    let status_is = |v: &str| {
        let s = ceph_json(&["service", "status"]);
        s.find(&format!("\"{daemon}\":"))
            .is_some_and(|i| s[i..].contains(&format!("\"lock_owner\":\"{v}\"")))
    };
    let not_owner = wait_until(Duration::from_secs(30), || status_is("false"))
        .expect("status lock_owner=false before the first write");
    let mut h = harness(Arc::clone(&backend), size);
    assert_good(&h.run(
        &cdb::write16(0, 8, false),
        DataDir::ToDevice(&[7u8; 8 * BS]),
    ));
    let owner = wait_until(Duration::from_secs(30), || status_is("true"))
        .expect("status lock_owner=true once the write took the lock");
    let s = String::from_utf8_lossy(
        &std::process::Command::new("timeout")
            .args(["20", "ceph", "-c", &conf(), "-s"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let line = s
        .lines()
        .find(|l| l.contains("tcmu-runner:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(line.contains("portal"), "`ceph -s` counts portals: {s}");
    h.stop();
    drop(h);
    drop(backend);
    let gone = wait_until(Duration::from_secs(60), || {
        let d = ceph_json(&["service", "dump"]);
        d.contains("\"services\"") && !d.contains(&format!("\"{daemon}\":"))
    })
    .expect("the entry leaves the service map when the LUN closes");
    eprintln!(
        "service map: listed {listed:?} after the open, status lock_owner=false seen after \
         {not_owner:?}, true {owner:?} after the first write; `ceph -s`: {line:?}; gone \
         {gone:?} after the close"
    );
}

/// ceph-iscsi's implicit ALUA layout on one gateway: group 1 "ao" (the configured owner's
/// port, RTPI 1) and group 2 "ano2" (RTPI 2); `local` is the group whose port is enabled here.
fn gateway_alua(local: u16) -> tcmu_scsi::alua::Alua {
    use tcmu_scsi::alua::{state, status, Alua, PortGroup, TargetPort};
    let g = |name: &str, id: u16, st: u8| PortGroup {
        name: name.into(),
        id,
        state: st,
        supported: 0x83, // T, AN, AO
        status: status::NONE,
        preferred: false,
        implicit: true,
        explicit: false,
        implicit_trans_secs: 45,
        ports: vec![TargetPort {
            rtpi: id,
            enabled: id == local,
        }],
    };
    Alua {
        groups: vec![
            g("ao", 1, state::ACTIVE_OPTIMIZED),
            g("ano2", 2, state::ACTIVE_NON_OPTIMIZED),
        ],
    }
}

/// (group id, state) of every descriptor of a REPORT TARGET PORT GROUPS answer.
fn rtpg_states(h: &mut Harness) -> Vec<(u16, u8)> {
    let mut cdb = [0u8; 12];
    cdb[0] = 0xA3;
    cdb[1] = 0x0A;
    cdb[6..10].copy_from_slice(&256u32.to_be_bytes());
    let c = h.run(&cdb, DataDir::FromDevice(256));
    assert_good(&c);
    let d = &c.data_in;
    let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize + 4;
    let mut out = Vec::new();
    let mut at = 4;
    while at + 8 <= len.min(d.len()) {
        out.push((u16::from_be_bytes([d[at + 2], d[at + 3]]), d[at] & 0x0F));
        at += 8 + 4 * d[at + 7] as usize;
    }
    out
}

/// Two gateways (two LUNs on two RADOS clients, each with ceph-iscsi's implicit ALUA groups,
/// its own port enabled) on one image: the one holding the exclusive lock reports its group
/// active/optimized and the other's active/non-optimized, both in REPORT TARGET PORT GROUPS;
/// a write through the non-optimized gateway moves the lock (after the holder's lock_hold)
/// and both answers flip; transitions and the time to optimized are counted.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn the_lock_holder_is_the_active_optimized_path_and_a_write_elsewhere_moves_it() {
    let (ao, ano) = (0u8, 1u8);
    let size: u64 = 4 << 20;
    let (_admin, name) = fresh_image("alua", size);
    let (ma, mb) = (Metrics::new(), Metrics::new());
    let a = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=30;lock_hold=1"),
        size,
        Some(&ma),
    );
    let b = open_lun(
        &rbd_cfg(&name, ";osd_op_timeout=31;lock_hold=1"),
        size,
        Some(&mb),
    );
    let with_alua = |backend: &Arc<dyn Backend>, local: u16| {
        let mut lun = LunSpec::new(size, BS as u32)
            .hw_max_sectors(2048)
            .lun_info(backend.as_ref());
        lun.alua = Some(gateway_alua(local));
        Harness::new(
            Arc::clone(backend),
            lun,
            EmuConfig::default(),
            &DeviceConfig {
                workers: 2,
                ..DeviceConfig::default()
            },
        )
    };
    let mut ha = with_alua(&a, 1);
    let mut hb = with_alua(&b, 2);
    // Nobody holds the lock: the configured owner (group 1) is optimized on both.
    assert_eq!(rtpg_states(&mut ha), [(1, ao), (2, ano)]);
    assert_eq!(rtpg_states(&mut hb), [(1, ao), (2, ano)]);
    let flip = |h: &mut Harness, other: &mut Harness, writer_group: u16, byte: u8| {
        let want: Vec<(u16, u8)> = [
            (1, if writer_group == 1 { ao } else { ano }),
            (2, if writer_group == 2 { ao } else { ano }),
        ]
        .into();
        let t = Instant::now();
        let (w, retries) = run_retrying(
            h,
            &cdb::write16(0, 8, false),
            DataDir::ToDevice(&[byte; 8 * BS]),
            Duration::from_secs(20),
        );
        assert_good(&w);
        let write_done = t.elapsed();
        let here = wait_until(Duration::from_secs(10), || rtpg_states(h) == want)
            .unwrap_or_else(|| panic!("the writer's RTPG shows {want:?}: {:?}", rtpg_states(h)));
        let there = wait_until(Duration::from_secs(10), || rtpg_states(other) == want)
            .unwrap_or_else(|| panic!("the peer's RTPG shows {want:?}: {:?}", rtpg_states(other)));
        eprintln!(
            "write through group {writer_group}: done after {write_done:?} ({retries} BUSY retries); \
             its RTPG optimized {here:?} later, the peer's {there:?} later"
        );
    };
    // B (group 2) writes: B takes the free lock, B's group is optimized everywhere.
    flip(&mut hb, &mut ha, 2, 0xb1);
    // A writes: after B's lock_hold the lock moves to A, and both answers flip back.
    flip(&mut ha, &mut hb, 1, 0xa1);
    // And again through B.
    flip(&mut hb, &mut ha, 2, 0xb2);
    let text = |m: &Metrics| m.encode();
    let count = |m: &Metrics, to: &str| {
        metric(
            &text(m),
            &format!("tcmu_warden_rbd_alua_transitions_total{{device=\"user_0/rbdlun\",subtype=\"rbd\",to=\"{to}\"}}"),
        )
    };
    assert_eq!(count(&mb, "active_optimized"), 2, "{}", text(&mb));
    assert_eq!(count(&mb, "active_non_optimized"), 1);
    assert_eq!(count(&ma, "active_optimized"), 1);
    assert_eq!(count(&ma, "active_non_optimized"), 1);
    assert!(
        metric(
            &text(&mb),
            "tcmu_warden_rbd_time_to_optimized_seconds_count{"
        ) >= 2,
        "{}",
        text(&mb)
    );
    let r = hb.run(&cdb::read16(0, 8), DataDir::FromDevice(8 * BS));
    assert_good(&r);
    assert_eq!(r.data_in, vec![0xb2; 8 * BS]);
    ha.stop();
    hb.stop();
}

// COMPARE AND WRITE: librbd's own, and the device's native and generic paths.
#[path = "rbd/caw.rs"]
mod caw;
#[path = "rbd/completion.rs"]
mod completion;

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn get_lba_status_reports_rbd_allocation_from_diff_iterate() {
    const MAPPED: u8 = 0;
    const DEALLOCATED: u8 = 1;
    let admin = admin();
    let name = unique("lbastatus");
    // Three 4 MiB objects (8192 blocks each).
    let size: u64 = 12 << 20;
    let obj = 8192u64;
    create_image(&admin, "rbd", None, &name, size);
    let backend = open_lun(&format!("rbd/{name};conf={}", conf()), size, None);
    assert!(backend.caps().unmap, "LBPME is reported");
    let mut h = harness(backend, size);
    let blocks = size / BS as u64;
    // A new image has no objects: all of it deallocated.
    assert_eq!(
        lba_status_at(&mut h, 0),
        (0, u32::try_from(blocks).unwrap(), DEALLOCATED)
    );
    // Data in objects 0 and 1; object 2 stays unwritten.
    let data = vec![0x5au8; 16 * BS];
    assert_good(&h.run(&cdb::write16(100, 16, false), DataDir::ToDevice(&data)));
    assert_good(&h.run(
        &cdb::write16(obj + 1000, 16, false),
        DataDir::ToDevice(&data),
    ));
    for lba in [100, 115, obj + 1000, obj + 1015] {
        let (start, n, st) = lba_status_at(&mut h, lba);
        assert_eq!(st, MAPPED, "written block {lba}: ({start}, {n})");
    }
    let (_, n, st) = lba_status_at(&mut h, 2 * obj);
    assert_eq!(
        (st, u64::from(n)),
        (DEALLOCATED, obj),
        "object 2 was never written"
    );
    // The whole answer from 0: extents in order, covering the LUN without gaps.
    let c = h.run(
        &cdb::get_lba_status(0, 8 + 16 * 32),
        DataDir::FromDevice(8 + 16 * 32),
    );
    assert_good(&c);
    let d = cdb::lba_status_descriptors(&c.data_in);
    eprintln!("descriptors: {d:?}");
    let mut at = 0u64;
    for &(lba, n, _) in &d {
        assert_eq!(lba, at, "contiguous: {d:?}");
        at += u64::from(n);
    }
    assert_eq!(at, blocks, "covers the LUN: {d:?}");
    // UNMAP of all of object 1 removes it: deallocated again.
    let params = cdb::unmap_params(&[(obj, u32::try_from(obj).unwrap())]);
    let plen = u16::try_from(params.len()).unwrap();
    assert_good(&h.run(&cdb::unmap(plen), DataDir::ToDevice(&params)));
    let (_, n, st) = lba_status_at(&mut h, obj);
    assert_eq!(st, DEALLOCATED, "object 1 after UNMAP");
    assert!(u64::from(n) >= obj, "all of object 1: {n}");
    // Object 0 keeps its data.
    assert_eq!(lba_status_at(&mut h, 100).2, MAPPED);
}

/// The backend skips the flush after a FUA write when librbd's cache is off for the image
/// (docs/rbd.md, "FUA writes and librbd's cache"); it reads the image's *effective*
/// `rbd_cache`: the client's `false` (as the backend's clients set it), overridden by an
/// image-level `rbd config image set ... rbd_cache true`. Both reads are checked here, then a
/// LUN on the overridden image still serves FUA writes (write + flush) that read back.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn the_effective_rbd_cache_of_an_image_includes_its_overrides() {
    let admin = admin();
    let name = unique("cacheopt");
    let size = 8u64 << 20;
    create_image(&admin, "rbd", None, &name, size);
    let client = Cluster::connect(&ConnectOptions {
        id: None,
        conf: Some(conf().into()),
        set: vec![("rbd_cache".to_string(), "false".to_string())],
    })
    .unwrap();
    let io = IoCtx::new(&client, "rbd", None).unwrap();
    let img = Image::open(&io, &name, None, false).unwrap();
    assert_eq!(
        img.config_get("rbd_cache").unwrap().as_deref(),
        Some("false")
    );
    assert_eq!(img.config_get("no_such_option_here").unwrap(), None);
    drop(img);
    let spec = format!("rbd/{name}");
    let st = std::process::Command::new("timeout")
        .args([
            "20",
            "rbd",
            "-c",
            &conf(),
            "config",
            "image",
            "set",
            &spec,
            "rbd_cache",
            "true",
        ])
        .status()
        .expect("run the rbd CLI");
    assert!(st.success(), "rbd config image set failed: {st}");
    let img = Image::open(&io, &name, None, false).unwrap();
    assert_eq!(
        img.config_get("rbd_cache").unwrap().as_deref(),
        Some("true")
    );
    drop(img);
    // With the override the LUN's FUA writes are write + flush; they complete and read back.
    let backend = open_lun(&format!("rbd/{name};conf={}", conf()), size, None);
    let mut h = harness_wc(backend, size, false);
    let data = vec![0x5au8; 8 * BS];
    assert_good(&h.run(&cdb::write16(16, 8, false), DataDir::ToDevice(&data)));
    let r = h.run(&cdb::read16(16, 8), DataDir::FromDevice(8 * BS));
    assert_good(&r);
    assert_eq!(r.data_in, data);
    h.stop();
    IoCtx::new(&admin, "rbd", None)
        .unwrap()
        .remove_image(&name)
        .unwrap();
}
