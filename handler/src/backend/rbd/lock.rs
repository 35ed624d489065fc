//! The exclusive lock, taken explicitly on the first write, held for a minimum time
//! (ping-pong damping), and waited for within a bound.
//!
//! librbd's default is a cooperative lock: a client that writes without holding it asks the
//! holder, which releases it at once. Two gateways writing the same image alternately (an
//! initiator using both paths of an ALUA pair) then move the lock on every write, and a write
//! waits inside librbd for as long as the handover takes, without bound.
//!
//! With `lock_hold=<secs>` greater than zero (the default, [`super::cfg::DEFAULT_LOCK_HOLD`]):
//!
//! - **Explicit lock.** Writes (WRITE, UNMAP, WRITE SAME) reach librbd only while this LUN's
//!   image handle holds the lock, taken with `rbd_lock_acquire(EXCLUSIVE)` by the LUN's lock
//!   thread (`rbd-lock-<name>`). A lock taken that way is not handed over when a peer asks:
//!   a peer's acquisition fails with `EROFS` (a cooperative librbd writer's writes too), and,
//!   on this handle, a write without the lock fails with `EROFS` instead of asking for it.
//!   Until the lock is held, writes wait in the gate; FLUSH without the lock completes at
//!   once (librbd's cache is off on these clients: every acknowledged write is on the OSDs).
//! - **Bounded wait.** A write that waited longer than `lock_timeout` completes with `EAGAIN`,
//!   i.e. BUSY, which Linux requeues on the same path. Not NOT READY 04/0A (`ETIMEDOUT`):
//!   that errno counts against the backend's health, and a peer holding the lock is not an
//!   unhealthy store. A peer's blocklisting and a broken lock keep their own path
//!   (`ESHUTDOWN`, reopen, see [`super::monitor`]).
//! - **Requests.** librbd tells an explicit holder nothing when a peer asks, so a LUN whose
//!   acquisition is refused posts a request record in the extended attribute
//!   [`XATTR`] of the image's header object (`rbd_header.<id>`: it goes away with the image),
//!   every [`POST_EVERY`] while it waits. The holder reads it every [`CHECK_EVERY`] while
//!   another client watches the image header: a record that changed since its acquisition,
//!   posted by someone else, is a request.
//! - **Alone on the image.** A peer has the image open (librbd watches the header on open)
//!   before it can ask, so the holder lists the header's watchers on acquisition and every
//!   [`WATCH_EVERY`]; while its own handle is the only watcher it reads no request record
//!   and checks the lock every [`ALONE_CHECK_EVERY`] instead of every [`CHECK_EVERY`]. Each
//!   check is a synchronous round trip to the header's OSD (counted in `lock_checks_total`)
//!   made while this LUN's writes are in flight; at 8 a second they cost about one write in
//!   a hundred ~40 ms at queue depth 1 in the benchmark (docs/rbd.md, "The explicit lock's
//!   checks"); a sole holder now makes 0.6 a second. A peer's request is seen
//!   within [`WATCH_EVERY`] + one tick of its opening the image (then every
//!   [`CHECK_EVERY`]), and a lock broken without a taker within [`ALONE_CHECK_EVERY`] (a
//!   taker watches the header: then within [`WATCH_EVERY`] + one tick). Any other
//!   watcher (a peer gateway, a plain librbd client, a stale watch, another LUN of this
//!   daemon on the image) or a listing that fails restores the [`CHECK_EVERY`] checks.
//! - **Minimum hold (damping).** A request seen before `lock_hold` has passed since the
//!   acquisition is held back (counted once per holding period as `damped`); once it has
//!   passed, the holder releases the lock (`rbd_lock_release`, which lets the writes in flight
//!   finish first) and does not take it back for [`YIELD`], so the asker gets it. Two
//!   gateways writing alternately thus swap the lock at most about once per `lock_hold`.
//! - **Lost lock.** The holder checks `rbd_is_exclusive_lock_owner` (a round trip: librbd
//!   asserts the lock on the header object) every [`CHECK_EVERY`] ([`ALONE_CHECK_EVERY`]
//!   alone);
//!   a lock gone without a release (broken) is logged with its new holder and counted
//!   (`lost`); a break blocklists this client, which the monitor handles by reopening.
//!
//! `lock_hold=0` keeps librbd's cooperative handover (no explicit lock, no bound on the wait,
//! transitions counted by the monitor's 1 s poll): for deployments where other librbd writers
//! must be able to take the lock without breaking it.

use super::backend::Inner;
use super::image::Opened;
use crate::backend::io::Io;
use crate::backend::LockHolder;
use ceph_rbd::Errno;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The header object's extended attribute holding the last lock request.
pub const XATTR: &str = "tcmu_warden.lock_request";
/// The lock thread's tick.
const TICK: Duration = Duration::from_millis(50);
/// While another client watches the image header, the holder reads the request record and
/// checks it still holds the lock this often.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);
/// The holder lists the header's watchers this often (and on acquisition).
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// While the holder's handle is the only watcher of the header, it checks it still holds the
/// lock this often, and reads no request record (nobody else has the image open to post one).
pub const ALONE_CHECK_EVERY: Duration = Duration::from_secs(10);
/// A refused acquisition is retried after this long.
const RETRY: Duration = Duration::from_millis(50);
/// A waiting LUN posts its request again this often.
pub const POST_EVERY: Duration = Duration::from_millis(200);
/// After handing the lock over, the LUN does not try to take it back for this long.
pub const YIELD: Duration = Duration::from_millis(500);

/// The write gate of one LUN in explicit-lock mode.
pub(super) struct Gate {
    /// Minimum hold.
    pub hold: Duration,
    /// Bound on a write's wait.
    pub timeout: Duration,
    /// Write submissions hold it shared; flipping [`Gate::owner`] takes it exclusively, so
    /// no write reaches librbd after the flag is cleared for a release.
    pub submit: RwLock<()>,
    owner: AtomicBool,
    /// Writes waiting for the lock, oldest first.
    pending: Mutex<VecDeque<(Io, Instant)>>,
    stop: Mutex<bool>,
    cv: Condvar,
    /// This handle's identity in request records.
    token: String,
}

impl Gate {
    pub fn new(hold: Duration, timeout: Duration) -> Gate {
        Gate {
            hold,
            timeout,
            submit: RwLock::new(()),
            owner: AtomicBool::new(false),
            pending: Mutex::new(VecDeque::new()),
            stop: Mutex::new(false),
            cv: Condvar::new(),
            token: token(),
        }
    }

    /// Whether this handle holds the lock (as the gate knows it).
    pub fn is_owner(&self) -> bool {
        self.owner.load(Ordering::Acquire)
    }

    fn set_owner(&self, v: bool) {
        let _w = self.submit.write();
        self.owner.store(v, Ordering::Release);
    }

    /// Park a write until the lock is held (call with [`Gate::submit`] held shared).
    pub fn park(&self, io: Io) {
        self.pending.lock().push_back((io, Instant::now()));
        self.cv.notify_all();
    }

    /// Writes waiting.
    pub fn waiting(&self) -> usize {
        self.pending.lock().len()
    }

    /// Complete the writes that waited past the bound with BUSY.
    pub fn expire(&self, inner: &Inner) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut p = self.pending.lock();
            while p
                .front()
                .is_some_and(|(_, t)| now.duration_since(*t) >= self.timeout)
            {
                if let Some((io, _)) = p.pop_front() {
                    expired.push(io);
                }
            }
        }
        if expired.is_empty() {
            return;
        }
        inner
            .metrics
            .lock_wait_timeouts
            .inc_by(expired.len() as u64);
        tracing::info!(device = %inner.device, image = %inner.cfg.spec(), writes = expired.len(),
            lock_timeout_ms = self.timeout.as_millis(),
            "rbd: writes waited for the exclusive lock past lock_timeout: completed with BUSY (retried)");
        for io in expired {
            io.complete(Err(Errno::EAGAIN));
        }
    }

    /// After a reopen on a fresh client: the new handle holds nothing.
    pub fn reset(&self) {
        self.set_owner(false);
    }

    /// Ask the lock thread to stop.
    pub fn stop(&self) {
        *self.stop.lock() = true;
        self.cv.notify_all();
    }
}

/// A token unique to this gate (process, time, sequence): a record this LUN posted is not a
/// request from a peer, even when both LUNs share a RADOS client.
fn token() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}.{nanos:x}.{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the lock thread remembers.
struct State {
    acquired_at: Instant,
    /// The request record when the lock was acquired.
    baseline: Option<Vec<u8>>,
    /// A damped request was counted in this holding period.
    damped: bool,
    next_check: Instant,
    /// Whether another watcher than this handle was on the header at the last listing.
    peers: bool,
    next_watch: Instant,
    retry_at: Instant,
    posted_at: Option<Instant>,
    posts: u64,
    warned_at: Option<Instant>,
}

fn header(cur: &Opened) -> &str {
    &cur.header
}

fn read_request(cur: &Opened) -> Option<Vec<u8>> {
    cur.image
        .ioctx()
        .get_xattr(header(cur), XATTR, 256)
        .ok()
        .flatten()
}

/// The lock thread of one LUN in explicit-lock mode.
pub(super) fn run(inner: &Arc<Inner>) {
    let Some(g) = inner.gate.as_ref() else { return };
    let now = Instant::now();
    let mut st = State {
        acquired_at: now,
        baseline: None,
        damped: false,
        next_check: now,
        peers: true,
        next_watch: now,
        retry_at: now,
        posted_at: None,
        posts: 0,
        warned_at: None,
    };
    loop {
        {
            let mut stop = g.stop.lock();
            if !*stop {
                g.cv.wait_for(&mut stop, TICK);
            }
            if *stop {
                break;
            }
        }
        g.expire(inner);
        if inner.recovering.load(Ordering::Acquire) {
            continue;
        }
        let cur = Arc::clone(&inner.current.read());
        if g.is_owner() {
            holding(inner, g, &cur, &mut st);
        } else if g.waiting() > 0 && Instant::now() >= st.retry_at {
            acquire(inner, g, &cur, &mut st);
        }
    }
    let left: Vec<_> = g.pending.lock().drain(..).collect();
    for (io, _) in left {
        io.complete(Err(Errno::EAGAIN));
    }
}

fn acquire(inner: &Inner, g: &Gate, cur: &Arc<Opened>, st: &mut State) {
    match cur.image.lock_acquire_exclusive() {
        Ok(()) => {
            let now = Instant::now();
            if let Some(waited) = g.pending.lock().front().map(|(_, t)| t.elapsed()) {
                inner
                    .metrics
                    .time_to_optimized
                    .observe(waited.as_secs_f64());
            }
            inner.set_holder(LockHolder::This);
            st.baseline = read_request(cur);
            st.acquired_at = now;
            st.damped = false;
            st.next_check = now + CHECK_EVERY;
            st.next_watch = now;
            st.posted_at = None;
            g.set_owner(true);
            inner.metrics.lock_acquired.inc();
            inner.metrics.lock_owner.set(1);
            inner.facts.lock().lock_owner = Some(true);
            tracing::info!(device = %inner.device, image = %inner.cfg.spec(), client = ?cur.client,
                hold_ms = g.hold.as_millis(), "rbd: exclusive lock acquired (explicitly)");
            let ios: Vec<_> = g.pending.lock().drain(..).collect();
            let _s = g.submit.read();
            for (io, _) in ios {
                inner.submit_now(io);
            }
        }
        Err(e) if e.is_blocklisted() => inner.blocklisted(cur),
        Err(e) if matches!(e.errno, Errno::EROFS | Errno::EBUSY | Errno::EAGAIN) => {
            // Held by a peer that does not hand it over by itself: ask.
            st.retry_at = Instant::now() + RETRY;
            if st.posted_at.map_or(true, |t| t.elapsed() >= POST_EVERY) {
                st.posts += 1;
                let rec = format!("{} {} {}", g.token, cur.client.addr, st.posts);
                if let Err(e) = cur
                    .image
                    .ioctx()
                    .set_xattr(header(cur), XATTR, rec.as_bytes())
                {
                    warn_throttled(inner, st, &format!("posting a lock request failed: {e}"));
                }
                st.posted_at = Some(Instant::now());
            }
            let oldest = g.pending.lock().front().map(|(_, t)| t.elapsed());
            if oldest.is_some_and(|a| a >= super::monitor::STALL) {
                inner.request_scan();
            }
        }
        Err(e) => {
            st.retry_at = Instant::now() + Duration::from_millis(200);
            warn_throttled(
                inner,
                st,
                &format!("acquiring the exclusive lock failed: {e}"),
            );
        }
    }
}

fn warn_throttled(inner: &Inner, st: &mut State, what: &str) {
    if st
        .warned_at
        .map_or(true, |t| t.elapsed() >= Duration::from_secs(10))
    {
        st.warned_at = Some(Instant::now());
        tracing::warn!(device = %inner.device, image = %inner.cfg.spec(), "rbd: {what}");
    }
}

/// Whether a client other than this handle watches the header (a peer gateway, a librbd
/// writer, a stale watcher, another LUN of this daemon on the same image). Each open image
/// handle is one watcher; when the list cannot be read, assume there is one.
fn others_watch(inner: &Inner, cur: &Arc<Opened>) -> bool {
    match cur.image.watchers() {
        Ok(w) => w.len() > 1,
        Err(e) => {
            if e.is_blocklisted() {
                inner.blocklisted(cur);
            }
            true
        }
    }
}

fn holding(inner: &Inner, g: &Gate, cur: &Arc<Opened>, st: &mut State) {
    let now = Instant::now();
    if now >= st.next_watch {
        st.next_watch = now + WATCH_EVERY;
        let was = st.peers;
        st.peers = others_watch(inner, cur);
        inner.metrics.lock_checks[0].inc();
        if st.peers && !was {
            // Someone opened the image: look for its request now.
            st.next_check = now;
        }
    }
    if now < st.next_check {
        return;
    }
    st.next_check = now
        + if st.peers {
            CHECK_EVERY
        } else {
            ALONE_CHECK_EVERY
        };
    inner.metrics.lock_checks[1].inc();
    match cur.image.is_lock_owner() {
        Ok(true) => {}
        Ok(false) => {
            g.set_owner(false);
            inner.metrics.lock_lost.inc();
            inner.metrics.lock_owner.set(0);
            inner.facts.lock().lock_owner = Some(false);
            let holder = cur
                .image
                .lock_owners()
                .map(|o| o.owners.join(", "))
                .unwrap_or_default();
            inner.set_holder(if holder.is_empty() {
                LockHolder::Nobody
            } else {
                LockHolder::Other
            });
            tracing::warn!(device = %inner.device, image = %inner.cfg.spec(), client = ?cur.client,
                now_held_by = %if holder.is_empty() { "nobody".to_string() } else { holder },
                "rbd: exclusive lock lost without a release (broken?)");
            return;
        }
        Err(e) => {
            if e.is_blocklisted() {
                inner.blocklisted(cur);
            }
            return;
        }
    }
    if !st.peers {
        return;
    }
    inner.metrics.lock_checks[2].inc();
    let Some(req) = read_request(cur) else { return };
    let from = req.split(|b| *b == b' ').next().unwrap_or_default();
    if st.baseline.as_ref() == Some(&req) || from == g.token.as_bytes() {
        return;
    }
    let held = st.acquired_at.elapsed();
    if held < g.hold {
        if !st.damped {
            st.damped = true;
            inner.metrics.lock_damped.inc();
            tracing::debug!(device = %inner.device, held_ms = held.as_millis(),
                "rbd: a peer asks for the exclusive lock; held until lock_hold has passed");
        }
        return;
    }
    let asker = String::from_utf8_lossy(&req)
        .split(' ')
        .nth(1)
        .unwrap_or("?")
        .to_string();
    g.set_owner(false);
    let r = cur.image.lock_release();
    // Handed to the peer that asked: it takes it within moments.
    inner.set_holder(LockHolder::Other);
    st.retry_at = Instant::now() + YIELD;
    inner.metrics.lock_owner.set(0);
    inner.facts.lock().lock_owner = Some(false);
    match r {
        Ok(()) => {
            inner.metrics.lock_released.inc();
            inner.metrics.lock_yielded.inc();
            tracing::info!(device = %inner.device, image = %inner.cfg.spec(), to = %asker,
                held_ms = held.as_millis(), "rbd: exclusive lock handed over to a peer that asked");
        }
        Err(e) if e.is_blocklisted() => inner.blocklisted(cur),
        Err(e) => {
            tracing::warn!(device = %inner.device, image = %inner.cfg.spec(),
                "rbd: releasing the exclusive lock failed: {e}");
        }
    }
}
