//! COMPARE AND WRITE on RBD: librbd's `rbd_aio_compare_and_write` on a bare handle, and the
//! device's two paths (docs/rbd.md, "COMPARE AND WRITE"): native (librbd's call, atomic on
//! the OSD across gateways) for what librbd takes, generic (read, compare, write under the LBA
//! range lock) for the rest. The races run two processes, each its own RADOS client, the way
//! VMware's ATS heartbeat races two hosts.

use super::*;
use tcmu_scsi::sense::Sense;

/// One COMPARE AND WRITE through a plain librbd handle: (librbd's result, mismatch offset).
fn librbd_caw(img: &Image, off: u64, cmp: &[u8], buf: &[u8]) -> (i64, u64) {
    assert_eq!(cmp.len(), buf.len());
    let (tx, rx) = crossbeam_channel::bounded(1);
    let target = ceph_rbd::AioTarget::new(3, tx);
    let mut mismatch = Box::new(u64::MAX);
    let mut comp = ceph_rbd::AioCompletion::new(&target).unwrap();
    let mp: *mut u64 = &mut *mismatch;
    // SAFETY: `cmp`, `buf` and the boxed `mismatch` stay alive and untouched until the
    // completion is received below.
    let started = unsafe {
        img.aio_compare_and_write(off, cmp.len(), cmp.as_ptr(), buf.as_ptr(), mp, &mut comp)
    };
    if let Err(e) = started {
        return (-i64::from(e.errno as i32), u64::MAX);
    }
    let done = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("compare and write completes");
    comp.fired();
    (done.ret, *mismatch)
}

fn librbd_read(img: &Image, off: u64, len: usize) -> Vec<u8> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let target = ceph_rbd::AioTarget::new(4, tx);
    let mut got = vec![0u8; len];
    let iov = [libc::iovec {
        iov_base: got.as_mut_ptr().cast(),
        iov_len: got.len(),
    }];
    let mut comp = ceph_rbd::AioCompletion::new(&target).unwrap();
    // SAFETY: `got` stays alive and untouched until the completion is received below.
    unsafe { img.aio_readv(&iov, off, &mut comp) }.unwrap();
    let done = rx.recv_timeout(Duration::from_secs(30)).expect("read");
    comp.fired();
    assert!(done.ret >= 0, "read failed: {}", done.ret);
    got
}

/// librbd's COMPARE AND WRITE on the OSD: equal data is replaced; unequal data is left alone
/// and reported with -EILSEQ and the offset of the first differing byte from the start of
/// the compared range (what the sense INFORMATION field needs, as it is). Pacific's
/// librbd takes at most one 512-byte sector (a range crossing a sector boundary is EINVAL).
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn librbd_compare_and_write_is_atomic_and_names_the_first_mismatch() {
    let (admin, name) = fresh_image("cawlib", 4 << 20);
    let io = IoCtx::new(&admin, "rbd", None).unwrap();
    let img = Image::open(&io, &name, None, false).unwrap();
    let off = 8 * BS as u64;
    let old = vec![0x11u8; BS];
    assert!(librbd_write(&img, off, &old) >= 0);
    let new = vec![0x22u8; BS];
    let (r, _) = librbd_caw(&img, off, &old, &new);
    assert!(r >= 0, "equal: written ({r})");
    assert_eq!(librbd_read(&img, off, BS), new);
    let mut cmp = new.clone();
    cmp[300] ^= 0xff;
    let (r, mismatch) = librbd_caw(&img, off, &cmp, &old);
    eprintln!("miscompare: ret {r}, mismatch_off {mismatch} (range starts at {off})");
    assert_eq!(r, -i64::from(libc::EILSEQ), "a miscompare is EILSEQ");
    assert_eq!(
        mismatch, 300,
        "the offset of the first differing byte from the start of the compared range"
    );
    assert_eq!(librbd_read(&img, off, BS), new, "nothing written");
}

/// The environment of the second process of the races below: `kind:rounds:image:dir`.
const RACE_ENV: &str = "TCMU_CAW_RACE";
const RACE_ROUNDS: u32 = 200;
/// Rounds of the race through the device with librbd's cooperative lock handover.
const SCSI_RACE_ROUNDS: u32 = 100;
/// Rounds of the race through the device with the explicit lock (each takes ~lock_hold).
const LOCKED_RACE_ROUNDS: u32 = 6;

/// A block of `BS` bytes tagged with (process, round): 8-byte words all equal, so a mix of
/// two writes is visible.
fn race_block(who: u8, round: u32) -> Vec<u8> {
    let mut word = [0u8; 8];
    word[0] = 0xA0 | who;
    word[4..].copy_from_slice(&round.to_be_bytes());
    word.repeat(BS / 8)
}

/// Wait until the peer's progress file says at least `step`, having written ours.
fn race_barrier(dir: &std::path::Path, me: u8, step: u32) {
    let mine = dir.join(format!("p{me}"));
    let tmp = dir.join(format!("p{me}.tmp"));
    std::fs::write(&tmp, step.to_string()).unwrap();
    std::fs::rename(&tmp, &mine).unwrap();
    let peer = dir.join(format!("p{}", 1 - me));
    let t = Instant::now();
    loop {
        let at: u32 = std::fs::read_to_string(&peer)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if at >= step {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the peer never reached step {step}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One side of the race: its own RADOS client, the ATS heartbeat pattern per round (read,
/// both have read, COMPARE AND WRITE old -> own, both done, check the block). Returns the
/// result of each round (0 written, 1 miscompare).
fn race_side(image: &str, dir: &std::path::Path, me: u8, rounds: u32) -> Vec<u8> {
    let c = admin();
    let io = IoCtx::new(&c, "rbd", None).unwrap();
    let img = Image::open(&io, image, None, false).unwrap();
    let mut results = Vec::new();
    for round in 0..rounds {
        race_barrier(dir, me, round * 3 + 1);
        let old = librbd_read(&img, 0, BS);
        race_barrier(dir, me, round * 3 + 2);
        let mine = race_block(me, round);
        let (r, mismatch) = librbd_caw(&img, 0, &old, &mine);
        race_barrier(dir, me, round * 3 + 3);
        let now = librbd_read(&img, 0, BS);
        let theirs = race_block(1 - me, round);
        match r {
            0.. => {
                assert_eq!(now, mine, "round {round}: won, so the block holds my write");
                results.push(0);
            }
            r if r == -i64::from(libc::EILSEQ) => {
                assert_eq!(
                    now, theirs,
                    "round {round}: lost, so the block holds the peer's write"
                );
                let first = old.iter().zip(&theirs).position(|(a, b)| a != b);
                assert_eq!(
                    Some(mismatch),
                    first.map(|i| i as u64),
                    "round {round}: the mismatch is where the peer's write first differs"
                );
                results.push(1);
            }
            r => panic!("round {round}: compare and write failed: {r}"),
        }
    }
    results
}

/// One side of the race through the device: an RBD LUN on this process's own RADOS client
/// (`lock_hold` as given: 0 is librbd's cooperative handover, else the explicit lock), each
/// round READ, both have read, COMPARE AND WRITE old -> own through the ring, both done, READ
/// and check: GOOD means the block holds my write; MISCOMPARE (1D/00, VALID, INFORMATION) means
/// it holds the peer's, and INFORMATION is where the peer's write first differs from what I
/// compared with. Every COMPARE AND WRITE went the native way. Returns 0 (won) or 1 per round.
fn scsi_race_side(
    image: &str,
    dir: &std::path::Path,
    me: u8,
    rounds: u32,
    lock_hold: u32,
) -> Vec<u8> {
    let size: u64 = 4 << 20;
    let metrics = Metrics::new();
    let backend = open_lun(
        &rbd_cfg(image, &format!(";lock_hold={lock_hold}")),
        size,
        Some(&metrics),
    );
    let mut h = harness(backend, size);
    let limit = Duration::from_secs(30);
    let read = |h: &mut Harness| {
        let (r, _) = run_retrying(h, &cdb::read16(0, 1), DataDir::FromDevice(BS), limit);
        assert_good(&r);
        r.data_in
    };
    let mut results = Vec::new();
    for round in 0..rounds {
        race_barrier(dir, me, round * 3 + 1);
        let old = read(&mut h);
        race_barrier(dir, me, round * 3 + 2);
        let mine = race_block(me, round);
        let data = [old.as_slice(), mine.as_slice()].concat();
        let (c, _) = run_retrying(&mut h, &cdb::caw(0, 1), DataDir::ToDevice(&data), limit);
        race_barrier(dir, me, round * 3 + 3);
        let now = read(&mut h);
        let theirs = race_block(1 - me, round);
        if c.status == 0 {
            assert!(
                now == mine,
                "round {round}: GOOD, so the block holds my write, not {:02x?}...",
                &now[..16]
            );
            results.push(0);
            continue;
        }
        assert_miscompare(&c, old.iter().zip(&theirs).position(|(a, b)| a != b));
        assert!(
            now == theirs,
            "round {round}: MISCOMPARE, so the block holds the peer's write, not {:02x?}...",
            &now[..16]
        );
        results.push(1);
    }
    let text = metrics.encode();
    assert_eq!(caw_count(&text, "native"), u64::from(rounds), "{text}");
    assert_eq!(caw_count(&text, "generic"), 0, "{text}");
    h.stop();
    results
}

/// COMPARE AND WRITE commands of the test LUN by path (native, generic).
fn caw_count(text: &str, path: &str) -> u64 {
    metric(
        text,
        &format!("tcmu_warden_rbd_compare_and_write_total{{device=\"user_0/rbdlun\",path=\"{path}\",subtype=\"rbd\"}}"),
    )
}

/// CHECK CONDITION, MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1D/00), INFORMATION valid
/// and equal to `at` (SBC-4: the offset of the first differing byte in the Data-Out buffer).
#[track_caller]
fn assert_miscompare(c: &Completed, at: Option<usize>) {
    assert_eq!(c.status, 2, "CHECK CONDITION: {:02x?}", &c.sense[..18]);
    assert_eq!(sense_of(c), (0x0E, 0x1D, 0x00), "MISCOMPARE 1D/00");
    if c.sense[0] & 0x7f == 0x70 {
        assert_ne!(c.sense[0] & 0x80, 0, "VALID set: {:02x?}", &c.sense[..18]);
    }
    let info = Sense::from_bytes(&c.sense).and_then(|s| s.info);
    assert_eq!(
        info,
        at.map(|i| i as u64),
        "INFORMATION: {:02x?}",
        &c.sense[..18]
    );
}

/// The second process of the races (does nothing unless started by a race test).
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn compare_and_write_race_peer() {
    let Ok(spec) = std::env::var(RACE_ENV) else {
        return;
    };
    let mut parts = spec.splitn(4, ':');
    let (kind, rounds, image, dir) = (
        parts.next().unwrap(),
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap(),
        std::path::Path::new(parts.next().expect("kind:rounds:image:dir")),
    );
    let results = race(kind, image, dir, 1, rounds);
    std::fs::write(dir.join("r1"), &results).unwrap();
}

/// One side of the race `kind`: `librbd` (a bare handle), `scsi-coop` (through the device,
/// cooperative lock handover), `scsi-locked` (through the device, explicit lock, lock_hold=1).
fn race(kind: &str, image: &str, dir: &std::path::Path, me: u8, rounds: u32) -> Vec<u8> {
    match kind {
        "librbd" => race_side(image, dir, me, rounds),
        "scsi-coop" => scsi_race_side(image, dir, me, rounds, 0),
        "scsi-locked" => scsi_race_side(image, dir, me, rounds, 1),
        k => panic!("unknown race {k}"),
    }
}

/// Run race `kind` for `rounds` between this process (side 0) and a second one (side 1) on a
/// fresh image: each round exactly one side wins. Returns the wins per side and the time.
fn race_two_processes(kind: &str, rounds: u32) -> ([u32; 2], Duration) {
    let (_admin, name) = fresh_image("cawrace", 4 << 20);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut peer = std::process::Command::new(exe)
        .args([
            "--exact",
            "caw::compare_and_write_race_peer",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(
            RACE_ENV,
            format!("{kind}:{rounds}:{name}:{}", dir.path().display()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the second process");
    let t = Instant::now();
    let mine = race(kind, &name, dir.path(), 0, rounds);
    let status = peer.wait().unwrap();
    let took = t.elapsed();
    assert!(status.success(), "the second process failed: {status}");
    let theirs = std::fs::read(dir.path().join("r1")).expect("the peer's results");
    assert_eq!(theirs.len(), mine.len());
    let mut won = [0u32; 2];
    for (round, (a, b)) in mine.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a + b,
            1,
            "round {round}: exactly one of the two wins ({a}, {b})"
        );
        // a == 0: process 0 wrote, a == 1: process 1 did.
        won[usize::from(*a)] += 1;
    }
    assert_eq!(won[0] + won[1], rounds);
    (won, took)
}

/// Two processes, each with its own librbd client, race COMPARE AND WRITE on one block the
/// way VMware's ATS heartbeat does, round after round: exactly one wins each round, the other
/// gets a miscompare, and the block always holds exactly one of the two writes.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn compare_and_write_races_between_two_processes_have_one_winner_per_round() {
    let (won, took) = race_two_processes("librbd", RACE_ROUNDS);
    eprintln!(
        "COMPARE AND WRITE race (bare librbd), {RACE_ROUNDS} rounds in {took:?}: process 0 won {}, \
         process 1 won {}, one miscompare per round, never a mixed block",
        won[0], won[1]
    );
}

/// Two gateways (two processes, each its own RADOS client and an RBD LUN on the same image
/// through the emulated ring) race one-block COMPARE AND WRITEs like ATS heartbeats: each
/// round exactly one gets GOOD, the other MISCOMPARE with the offset where the winner's block
/// first differs from the old one, and the block holds one of the two writes, never a mix.
/// First with librbd's cooperative lock handover (every COMPARE AND WRITE may move the lock),
/// then through the explicit lock's gate (the loser's waits for the lock, lock_hold=1).
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn two_gateways_racing_compare_and_write_have_one_winner_per_round() {
    for (kind, rounds) in [
        ("scsi-coop", SCSI_RACE_ROUNDS),
        ("scsi-locked", LOCKED_RACE_ROUNDS),
    ] {
        let (won, took) = race_two_processes(kind, rounds);
        eprintln!(
            "COMPARE AND WRITE race through two gateways ({kind}), {rounds} rounds in {took:?}: \
             gateway 0 won {}, gateway 1 won {}, one MISCOMPARE per round, never a mixed block",
            won[0], won[1]
        );
    }
}

/// One daemon: a one-block COMPARE AND WRITE (512-byte blocks) goes to librbd, in the second
/// RADOS object too: GOOD writes, a miscompare is MISCOMPARE 1D/00 with the offset in
/// INFORMATION and the block untouched. librbd itself refuses two blocks and a range crossing
/// a 512-byte boundary (EINVAL, checked here on the cluster), so a two-block COMPARE AND WRITE
/// takes the generic path, with the same answers. Both paths are counted.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh"]
fn compare_and_write_through_scsi_is_native_for_one_sector_and_generic_beyond() {
    let size: u64 = 12 << 20;
    let (admin, name) = fresh_image("cawscsi", size);
    let pattern = |seed: u8, n: usize| -> Vec<u8> {
        (0..n).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
    };
    // In the second 4 MiB object.
    let lba = 8192 + 5;
    let a = pattern(1, BS);
    let b = pattern(2, BS);
    // What librbd itself says, on a bare handle (before the LUN takes the
    // exclusive lock): its raw mismatch offset there (Pacific: the
    // object's start plus the offset in the range), and its refusals.
    let io = IoCtx::new(&admin, "rbd", None).unwrap();
    let img = Image::open(&io, &name, None, false).unwrap();
    let off = lba * BS as u64;
    assert!(librbd_write(&img, off, &b) >= 0);
    let mut cmp = b.clone();
    cmp[300] ^= 0xff;
    let (r, raw) = librbd_caw(&img, off, &cmp, &a);
    assert_eq!(r, -i64::from(libc::EILSEQ));
    eprintln!("librbd's raw mismatch offset for byte 300 of a range at {off}: {raw}");
    assert_eq!(
        tcmu_warden::backend::rbd::backend::mismatch_from_start(raw, off, BS as u64),
        Some(300)
    );
    let two = pattern(3, 2 * BS);
    let (r, _) = librbd_caw(&img, off, &two, &two);
    assert_eq!(r, -i64::from(libc::EINVAL), "librbd refuses 1024 bytes");
    let (r, _) = librbd_caw(&img, off + 256, &b, &b);
    assert_eq!(
        r,
        -i64::from(libc::EINVAL),
        "librbd refuses crossing a 512-byte boundary"
    );
    drop(img);
    let metrics = Metrics::new();
    let backend = open_lun(&rbd_cfg(&name, ""), size, Some(&metrics));
    let mut h = harness(backend, size);
    let read = |h: &mut Harness, lba: u64, blocks: u32| {
        let r = h.run(
            &cdb::read16(lba, blocks),
            DataDir::FromDevice(blocks as usize * BS),
        );
        assert_good(&r);
        r.data_in
    };
    // Native.
    assert_good(&h.run(&cdb::write16(lba, 1, false), DataDir::ToDevice(&a)));
    let t = Instant::now();
    assert_good(&h.run(
        &cdb::caw(lba, 1),
        DataDir::ToDevice(&[a.clone(), b.clone()].concat()),
    ));
    let native_took = t.elapsed();
    assert_eq!(read(&mut h, lba, 1), b, "written on a match");
    let mut cmp = b.clone();
    cmp[300] ^= 0xff;
    cmp[400] ^= 0xff;
    let c = h.run(
        &cdb::caw(lba, 1),
        DataDir::ToDevice(&[cmp, a.clone()].concat()),
    );
    assert_miscompare(&c, Some(300));
    assert_eq!(read(&mut h, lba, 1), b, "untouched after a miscompare");
    let text = metrics.encode();
    assert_eq!(
        (caw_count(&text, "native"), caw_count(&text, "generic")),
        (2, 0),
        "{text}"
    );
    // Generic: two blocks.
    let lba = 100;
    let c2 = pattern(4, 2 * BS);
    let d2 = pattern(5, 2 * BS);
    assert_good(&h.run(&cdb::write16(lba, 2, false), DataDir::ToDevice(&c2)));
    let t = Instant::now();
    let (r, _) = run_retrying(
        &mut h,
        &cdb::caw(lba, 2),
        DataDir::ToDevice(&[c2.clone(), d2.clone()].concat()),
        Duration::from_secs(20),
    );
    assert_good(&r);
    let generic_took = t.elapsed();
    assert_eq!(read(&mut h, lba, 2), d2, "written on a match");
    let mut cmp = d2.clone();
    cmp[700] ^= 0xff;
    let c = h.run(&cdb::caw(lba, 2), DataDir::ToDevice(&[cmp, c2].concat()));
    assert_miscompare(&c, Some(700));
    assert_eq!(read(&mut h, lba, 2), d2, "untouched after a miscompare");
    let text = metrics.encode();
    assert_eq!(
        (caw_count(&text, "native"), caw_count(&text, "generic")),
        (2, 2),
        "{text}"
    );
    assert!(
        text.contains("tcmu_warden_rbd_op_duration_seconds_count{device=\"user_0/rbdlun\",op=\"compare_and_write\",subtype=\"rbd\"} 2"),
        "librbd's COMPARE AND WRITE latency is a series of its own:\n{text}"
    );
    eprintln!("one-block COMPARE AND WRITE (native) took {native_took:?}, two-block (generic) {generic_took:?}");
    h.stop();
}
