//! Fault injection: a [`Backend`] wrapper that delays, hangs or fails chosen operations, by
//! configuration. Used by the deterministic tests of the supervisor's tiers and state
//! machine, and (testing only) by the daemon through the `faults` configuration key.
//!
//! # Rules
//!
//! A rule names the operations it applies to, what to do with them, and how often:
//!
//! ```text
//! write:fail=EIO;read:delay=200ms;any:hang;flush:fail=ETIMEDOUT,count=3
//! read|write:hang=60s,every=10
//! read:hang,at=4096
//! ```
//!
//! - rules are separated by `;` (blanks around tokens are ignored, empty rules too, so an
//!   empty string means "no faults");
//! - operations: `read`, `write`, `flush`, `unmap`, `write_zeroes`, `ping` (the health
//!   monitor's probe), or `any` (all of them), joined with `|`;
//! - actions: `fail=<ERRNO>` (a name such as `EIO`, `ETIMEDOUT`, `ESHUTDOWN`, `ENOTCONN`,
//!   `ENOSPC`, or a number), `delay=<duration>`, `hang` (held until [`FaultBackend::release_hung`]
//!   or until the rule is removed by [`FaultBackend::set_rules`]), `hang=<duration>` (held
//!   like `hang`, and released by the timer after the duration), `stall=<duration>` (an
//!   outage: the first matching operation opens a window of that length, and every matching
//!   operation arriving while it is open is held until it closes, then submitted in arrival
//!   order; `count` limits how many windows open);
//! - options: `every=N` applies the action to the Nth, 2Nth, … operation that reaches the
//!   rule (default 1: all of them); `count=N` stops after the action was applied N times;
//!   `at=OFFSET` narrows the rule to operations that start at that byte offset (never a
//!   ping, which has none).
//!
//! Rules are tried in order; the first rule whose operations match and which fires (its
//! `every` turn has come and its `count` is not used up) applies. An operation no rule
//! applies to goes straight to the inner backend.
//!
//! # Threads
//!
//! Nothing here blocks the submitting thread: a failure completes the `Io` at once, a delayed
//! operation is handed to the wrapper's timer thread (one per `FaultBackend`, started on first
//! need) which submits it to the inner backend when due, and a hung operation is parked until
//! released. [`Backend::completes_inline`] is therefore `false`. A delayed or timed-hang
//! operation is submitted to the inner backend from the timer thread, so with a synchronous
//! inner backend (the file backend) it runs there, one at a time.
//!
//! # Drop
//!
//! When a `FaultBackend` is dropped, the operations it still holds (hung, or waiting for
//! their delay) are **released to the inner backend** in arrival order, as if the fault had
//! ended: the wrapper never loses or fails an operation it was not told to fail. Note that a
//! held `Io` of a device keeps that device's link (and so, usually, this wrapper) alive: call
//! [`FaultBackend::release_hung`] or [`FaultBackend::set_rules`] to end a hang.

use super::io::{Io, IoOp};
use super::{Backend, Caps};
use crate::duration::{format_duration, parse_duration};
use nix::errno::Errno;
use parking_lot::{Condvar, Mutex, RwLock};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A set of operation kinds a [`Rule`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSet(u8);

impl OpSet {
    /// READ.
    pub const READ: OpSet = OpSet(1);
    /// WRITE (with or without FUA).
    pub const WRITE: OpSet = OpSet(2);
    /// FLUSH (SYNCHRONIZE CACHE).
    pub const FLUSH: OpSet = OpSet(4);
    /// UNMAP.
    pub const UNMAP: OpSet = OpSet(8);
    /// WRITE ZEROES (WRITE SAME of zeros).
    pub const WRITE_ZEROES: OpSet = OpSet(16);
    /// The health monitor's ping ([`Backend::ping`]).
    pub const PING: OpSet = OpSet(32);
    /// Every operation, pings included.
    pub const ANY: OpSet = OpSet(63);
    /// No operation.
    pub const NONE: OpSet = OpSet(0);

    const NAMES: [(&'static str, OpSet); 6] = [
        ("read", OpSet::READ),
        ("write", OpSet::WRITE),
        ("flush", OpSet::FLUSH),
        ("unmap", OpSet::UNMAP),
        ("write_zeroes", OpSet::WRITE_ZEROES),
        ("ping", OpSet::PING),
    ];

    /// The set holding only `op`'s kind.
    #[must_use]
    pub fn of(op: IoOp) -> OpSet {
        match op {
            IoOp::Read => OpSet::READ,
            // The write of an atomic COMPARE AND WRITE the inner backend does itself.
            IoOp::Write { .. } | IoOp::CompareAndWrite { .. } => OpSet::WRITE,
            IoOp::Flush => OpSet::FLUSH,
            IoOp::Unmap { .. } => OpSet::UNMAP,
            IoOp::WriteZeroes { .. } => OpSet::WRITE_ZEROES,
        }
    }

    /// Whether `op`'s kind is in the set.
    #[must_use]
    pub fn matches(self, op: IoOp) -> bool {
        self.0 & OpSet::of(op).0 != 0
    }

    /// Whether the set holds the health ping.
    #[must_use]
    pub fn has_ping(self) -> bool {
        self.0 & OpSet::PING.0 != 0
    }

    /// Whether the set holds no operation.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for OpSet {
    type Output = OpSet;
    fn bitor(self, rhs: OpSet) -> OpSet {
        OpSet(self.0 | rhs.0)
    }
}

impl fmt::Display for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == OpSet::ANY {
            return f.write_str("any");
        }
        let mut first = true;
        for (name, s) in OpSet::NAMES {
            if self.0 & s.0 != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// What a [`Rule`] does to an operation it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Submit to the inner backend after this long (on the timer thread).
    Delay(Duration),
    /// Hold the operation until [`FaultBackend::release_hung`], or until
    /// [`FaultBackend::set_rules`] removes the rule; then submit it to the inner backend.
    Hang,
    /// Complete the operation at once with this errno; the inner backend never sees it.
    Fail(Errno),
    /// Hold like [`Action::Hang`], and release after this long at the latest.
    HangFor(Duration),
    /// An outage: the first matching operation opens a window of this length; every matching
    /// operation that arrives while it is open is held until it closes, then all are
    /// submitted in arrival order. `count` limits how many windows open.
    Stall(Duration),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Delay(d) => write!(f, "delay={}", format_duration(*d)),
            Action::Hang => f.write_str("hang"),
            Action::Fail(e) => write!(f, "fail={e:?}"),
            Action::HangFor(d) => write!(f, "hang={}", format_duration(*d)),
            Action::Stall(d) => write!(f, "stall={}", format_duration(*d)),
        }
    }
}

/// One fault rule. See the module docs for the syntax and the matching order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The operations it applies to.
    pub ops: OpSet,
    /// What it does to them.
    pub action: Action,
    /// Apply to every Nth operation that reaches the rule (1 = all); never 0.
    pub every: u32,
    /// Stop after the action was applied this many times (`None`: never stop).
    pub count: Option<u32>,
    /// Only operations starting at this byte offset (`None`: any offset, pings included).
    pub at: Option<u64>,
}

impl Rule {
    /// A rule applying `action` to every operation of `ops`, without limit.
    #[must_use]
    pub fn new(ops: OpSet, action: Action) -> Rule {
        Rule {
            ops,
            action,
            every: 1,
            count: None,
            at: None,
        }
    }

    /// Whether the rule's operations and offset cover `io` (its `every`/`count` turn aside).
    fn covers(&self, io: &Io) -> bool {
        self.ops.matches(io.op()) && self.at.map_or(true, |at| io.offset() == at)
    }

    /// Whether the rule covers the health ping (which has no offset).
    fn covers_ping(&self) -> bool {
        self.ops.has_ping() && self.at.is_none()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ops, self.action)?;
        if self.every != 1 {
            write!(f, ",every={}", self.every)?;
        }
        if let Some(c) = self.count {
            write!(f, ",count={c}")?;
        }
        if let Some(at) = self.at {
            write!(f, ",at={at}")?;
        }
        Ok(())
    }
}

/// A fault rule string that cannot be parsed: names the rule, the bad token and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault rule `{rule}`: bad token `{token}`: {reason}")]
pub struct FaultParseError {
    /// The rule (between `;`) holding the bad token.
    pub rule: String,
    /// The token that is wrong.
    pub token: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Rule {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Rule, FaultParseError> {
        let rule_text = s.trim();
        let bad = |token: &str, reason: String| FaultParseError {
            rule: rule_text.to_string(),
            token: token.trim().to_string(),
            reason,
        };
        let Some((ops_text, rest)) = rule_text.split_once(':') else {
            return Err(bad(
                rule_text,
                "expected <ops>:<action>, e.g. write:fail=EIO".into(),
            ));
        };
        let mut ops = OpSet::NONE;
        for name in ops_text.split('|') {
            let n = name.trim();
            let set = if n.eq_ignore_ascii_case("any") {
                Some(OpSet::ANY)
            } else {
                OpSet::NAMES
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|&(_, s)| s)
            };
            match set {
                Some(s) => ops = ops | s,
                None => return Err(bad(
                    name,
                    "unknown operation; expected read, write, flush, unmap, write_zeroes, ping or any"
                        .into(),
                )),
            }
        }
        let mut parts = rest.split(',');
        let action_text = parts.next().unwrap_or("").trim();
        let (verb, arg) = match action_text.split_once('=') {
            Some((v, a)) => (v.trim(), Some(a.trim())),
            None => (action_text, None),
        };
        let dur = |a: Option<&str>| -> Result<Duration, FaultParseError> {
            let a = a.ok_or_else(|| {
                bad(
                    action_text,
                    format!("`{verb}` needs a duration, e.g. {verb}=200ms"),
                )
            })?;
            parse_duration(a).map_err(|e| bad(action_text, e.to_string()))
        };
        let action = match verb.to_ascii_lowercase().as_str() {
            "delay" => Action::Delay(dur(arg)?),
            "hang" => match arg {
                None => Action::Hang,
                Some(_) => Action::HangFor(dur(arg)?),
            },
            "stall" => Action::Stall(dur(arg)?),
            "fail" => {
                let a = arg.ok_or_else(|| {
                    bad(action_text, "`fail` needs an errno, e.g. fail=EIO".into())
                })?;
                Action::Fail(parse_errno(a).map_err(|r| bad(action_text, r))?)
            }
            _ => return Err(bad(
                action_text,
                "unknown action; expected fail=<ERRNO>, delay=<duration>, hang, hang=<duration> or stall=<duration>"
                    .into(),
            )),
        };
        let mut rule = Rule::new(ops, action);
        for opt in parts {
            let Some((k, v)) = opt.split_once('=') else {
                return Err(bad(
                    opt,
                    "expected every=<N>, count=<N> or at=<OFFSET>".into(),
                ));
            };
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| bad(opt, format!("`{}` is not a whole number", v.trim())))?;
            let n32 = || u32::try_from(n).map_err(|_| bad(opt, format!("{n} is too large")));
            match k.trim() {
                "every" if n == 0 => return Err(bad(opt, "every must be at least 1".into())),
                "every" => rule.every = n32()?,
                "count" => rule.count = Some(n32()?),
                "at" => rule.at = Some(n),
                _ => {
                    return Err(bad(
                        opt,
                        "unknown option; expected every=<N>, count=<N> or at=<OFFSET>".into(),
                    ))
                }
            }
        }
        Ok(rule)
    }
}

/// Errno names accepted by `fail=` (a number is accepted too).
const ERRNOS: &[Errno] = &[
    Errno::EIO,
    Errno::ETIMEDOUT,
    Errno::ESHUTDOWN,
    Errno::ENOTCONN,
    Errno::ECONNRESET,
    Errno::ECONNREFUSED,
    Errno::ECONNABORTED,
    Errno::EHOSTUNREACH,
    Errno::ENETUNREACH,
    Errno::ENOLINK,
    Errno::ENOSPC,
    Errno::EDQUOT,
    Errno::EAGAIN,
    Errno::EBUSY,
    Errno::EINTR,
    Errno::ENOMEM,
    Errno::ENODEV,
    Errno::ENXIO,
    Errno::ENOENT,
    Errno::ESTALE,
    Errno::EROFS,
    Errno::EPERM,
    Errno::EACCES,
    Errno::EINVAL,
    Errno::EOPNOTSUPP,
    Errno::ECANCELED,
    Errno::EILSEQ,
    Errno::EREMOTEIO,
    Errno::EFBIG,
];

/// Above every errno number Linux defines (133 in 6.1).
const MAX_ERRNO: i32 = 256;

fn parse_errno(s: &str) -> Result<Errno, String> {
    if let Ok(n) = s.parse::<i32>() {
        let e = Errno::from_raw(n);
        return if n > 0 && e != Errno::UnknownErrno {
            Ok(e)
        } else {
            Err(format!("{n} is not a known errno"))
        };
    }
    // Any errno name the C library knows is taken back, so a rule given as a number reads
    // back from its written form (`fail=77` is written `fail=EBADFD`).
    ERRNOS
        .iter()
        .copied()
        .chain((1..MAX_ERRNO).map(Errno::from_raw))
        .filter(|e| *e != Errno::UnknownErrno)
        .find(|e| format!("{e:?}").eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!("unknown errno `{s}`; use a number or one of EIO, ETIMEDOUT, ESHUTDOWN, ENOTCONN, ECONNRESET, ENOSPC, EAGAIN, EBUSY, ENOMEM, …")
        })
}

/// Parse a rule list such as `write:fail=EIO;read:delay=200ms`. An empty (or blank) string
/// gives no rules.
///
/// # Errors
/// The first malformed rule, naming its bad token.
pub fn parse_rules(s: &str) -> Result<Vec<Rule>, FaultParseError> {
    s.split(';')
        .filter(|r| !r.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Format rules back to the compact syntax [`parse_rules`] reads.
#[must_use]
pub fn format_rules(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";")
}

/// A rule with its counters.
struct Armed {
    rule: Rule,
    /// Operations that reached the rule (matched its ops, not taken by an earlier rule).
    seen: AtomicU64,
    /// Times the action was applied.
    applied: AtomicU32,
    /// For [`Action::Stall`]: when the open window closes.
    window: parking_lot::Mutex<Option<Instant>>,
}

impl Armed {
    fn new(rule: Rule) -> Armed {
        Armed {
            rule,
            seen: AtomicU64::new(0),
            applied: AtomicU32::new(0),
            window: parking_lot::Mutex::new(None),
        }
    }

    /// Whether the rule applies to this operation at `now`: a stall window that is open
    /// holds every operation (without counting); otherwise [`Armed::fires`] decides, and for
    /// a stall opens a new window.
    fn applies(&self, now: Instant) -> bool {
        let Action::Stall(d) = self.rule.action else {
            return self.fires();
        };
        let mut w = self.window.lock();
        if w.is_some_and(|until| now < until) {
            return true;
        }
        if self.fires() {
            *w = Some(now.checked_add(d).unwrap_or(now));
            return true;
        }
        false
    }

    /// When the open stall window closes.
    fn window_end(&self) -> Option<Instant> {
        *self.window.lock()
    }

    /// Whether the rule applies to this operation (which matched its ops); counts it.
    fn fires(&self) -> bool {
        let every = u64::from(self.rule.every.max(1));
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n % every != 0 {
            return false;
        }
        match self.rule.count {
            None => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(max) => self
                .applied
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                    (a < max).then_some(a + 1)
                })
                .is_ok(),
        }
    }
}

/// An operation waiting for its delay on the timer thread.
struct Pending {
    due: Instant,
    seq: u64,
    io: Io,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Pending) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Reversed, so that the max-heap pops the earliest due (then the earliest submitted).
    fn cmp(&self, other: &Pending) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// A hung operation.
struct Held {
    seq: u64,
    io: Io,
    /// Released by the timer at this instant (`hang=<duration>`).
    until: Option<Instant>,
    /// The rule that holds it: released when `set_rules` removes that rule.
    rule: Rule,
}

#[derive(Default)]
struct State {
    delayed: BinaryHeap<Pending>,
    hung: Vec<Held>,
    seq: u64,
    shutdown: bool,
}

/// What the timer thread shares with the wrapper (never the wrapper itself, so that the
/// thread does not keep it alive).
struct Shared {
    inner: Arc<dyn Backend>,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn timer_loop(&self) {
        let mut st = self.state.lock();
        let mut due: Vec<(u64, Io)> = Vec::new();
        loop {
            if st.shutdown {
                return;
            }
            let now = Instant::now();
            while st.delayed.peek().is_some_and(|p| p.due <= now) {
                if let Some(p) = st.delayed.pop() {
                    due.push((p.seq, p.io));
                }
            }
            if st.hung.iter().any(|h| h.until.is_some_and(|u| u <= now)) {
                let (go, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut st.hung)
                    .into_iter()
                    .partition(|h| h.until.is_some_and(|u| u <= now));
                st.hung = keep;
                due.extend(go.into_iter().map(|h| (h.seq, h.io)));
            }
            if !due.is_empty() {
                due.sort_by_key(|(seq, _)| *seq);
                parking_lot::MutexGuard::unlocked(&mut st, || {
                    for (_, io) in due.drain(..) {
                        self.inner.submit(io);
                    }
                });
                continue;
            }
            let next = st
                .delayed
                .peek()
                .map(|p| p.due)
                .into_iter()
                .chain(st.hung.iter().filter_map(|h| h.until))
                .min();
            match next {
                Some(t) => {
                    let _ = self.cv.wait_until(&mut st, t);
                }
                None => self.cv.wait(&mut st),
            }
        }
    }
}

/// A backend wrapper that injects faults. See the module docs.
pub struct FaultBackend {
    shared: Arc<Shared>,
    rules: RwLock<Vec<Armed>>,
    timer: Mutex<Option<JoinHandle<()>>>,
    injected: AtomicU64,
    /// Bumped by `release_hung`: ends the hang of a ping.
    ping_releases: AtomicU64,
}

impl FaultBackend {
    /// Wrap `inner` with `rules` (which may be empty: then every operation passes through).
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, rules: Vec<Rule>) -> FaultBackend {
        FaultBackend {
            shared: Arc::new(Shared {
                inner,
                state: Mutex::new(State::default()),
                cv: Condvar::new(),
            }),
            rules: RwLock::new(rules.into_iter().map(Armed::new).collect()),
            timer: Mutex::new(None),
            injected: AtomicU64::new(0),
            ping_releases: AtomicU64::new(0),
        }
    }

    /// The wrapped backend.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.shared.inner
    }

    /// The rules in force.
    #[must_use]
    pub fn rules(&self) -> Vec<Rule> {
        self.rules.read().iter().map(|a| a.rule).collect()
    }

    /// Replace the rules (their `every`/`count` counters start again). Operations held by a
    /// `hang` rule that is not among the new rules are released to the inner backend, in
    /// arrival order; those held by a rule that stays keep waiting. Delayed operations keep
    /// their due time. `set_rules(Vec::new())` ends every fault.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        let mut armed = self.rules.write();
        let released: Vec<Held> = {
            let mut st = self.shared.state.lock();
            let (go, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut st.hung)
                .into_iter()
                .partition(|h| !rules.contains(&h.rule));
            st.hung = keep;
            go
        };
        *armed = rules.into_iter().map(Armed::new).collect();
        drop(armed);
        for h in released {
            self.shared.inner.submit(h.io);
        }
    }

    /// Release every hung operation to the inner backend, in arrival order; returns how many.
    /// The rules stay in force: later operations can hang again.
    pub fn release_hung(&self) -> usize {
        self.ping_releases.fetch_add(1, Ordering::SeqCst);
        let held = std::mem::take(&mut self.shared.state.lock().hung);
        let n = held.len();
        for h in held {
            self.shared.inner.submit(h.io);
        }
        n
    }

    /// Operations hung now (`hang` and `hang=<duration>`).
    #[must_use]
    pub fn hung(&self) -> usize {
        self.shared.state.lock().hung.len()
    }

    /// Operations waiting for their delay now.
    #[must_use]
    pub fn delayed(&self) -> usize {
        self.shared.state.lock().delayed.len()
    }

    /// Times a rule's action was applied since this wrapper was made.
    #[must_use]
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Start the timer thread if it is not running. False if it cannot be started.
    fn ensure_timer(&self) -> bool {
        let mut t = self.timer.lock();
        if t.is_some() {
            return true;
        }
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("fault-timer".into())
            .spawn(move || shared.timer_loop())
        {
            Ok(h) => {
                *t = Some(h);
                true
            }
            Err(e) => {
                tracing::error!(
                    "fault injection: cannot start the timer thread ({e}); timed faults pass through"
                );
                false
            }
        }
    }
}

impl Backend for FaultBackend {
    fn describe(&self) -> String {
        let rules = self.rules();
        format!(
            "fault({})+{}",
            format_rules(&rules),
            self.shared.inner.describe()
        )
    }

    fn size(&self) -> u64 {
        self.shared.inner.size()
    }

    fn caps(&self) -> Caps {
        self.shared.inner.caps()
    }

    fn resize(&self, new_size: u64) -> Result<(), Errno> {
        self.shared.inner.resize(new_size)
    }

    fn completes_inline(&self) -> bool {
        false
    }

    /// Faults never wait in `submit`; an operation no rule takes goes to the inner backend
    /// from the caller's thread, so this is the inner backend's answer.
    fn submit_returns_at_once(&self) -> bool {
        self.shared.inner.submit_returns_at_once()
    }

    fn op_timeout(&self) -> Option<Duration> {
        self.shared.inner.op_timeout()
    }

    fn reopen(&self) -> Result<(), Errno> {
        self.shared.inner.reopen()
    }

    /// Held (delayed or hung) here, plus the inner backend's.
    fn in_flight(&self) -> usize {
        let st = self.shared.state.lock();
        st.delayed.len() + st.hung.len() + self.shared.inner.in_flight()
    }

    fn diagnose(&self) -> Vec<String> {
        self.shared.inner.diagnose()
    }

    fn lock_holder(&self) -> super::LockHolder {
        self.shared.inner.lock_holder()
    }

    fn atomic_compare_and_write(&self, off: u64, len: u64) -> bool {
        self.shared.inner.atomic_compare_and_write(off, len)
    }

    /// The rules apply to pings too (operation `ping`, included in `any`), synchronously: a
    /// delayed, hung or stalled ping blocks the calling thread (the health monitor's prober)
    /// as a frozen server would.
    fn ping(&self) -> Result<(), Errno> {
        let now = Instant::now();
        let found = self
            .rules
            .read()
            .iter()
            .find(|a| a.rule.covers_ping() && a.applies(now))
            .map(|a| (a.rule, a.window_end()));
        let Some((rule, window)) = found else {
            return self.shared.inner.ping();
        };
        self.injected.fetch_add(1, Ordering::Relaxed);
        match rule.action {
            Action::Fail(e) => return Err(e),
            Action::Delay(d) | Action::HangFor(d) => std::thread::sleep(d),
            Action::Stall(_) => {
                if let Some(end) = window {
                    std::thread::sleep(end.saturating_duration_since(Instant::now()));
                }
            }
            Action::Hang => {
                let gen = self.ping_releases.load(Ordering::SeqCst);
                while self.rules.read().iter().any(|a| a.rule == rule)
                    && self.ping_releases.load(Ordering::SeqCst) == gen
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.shared.inner.ping()
    }

    fn submit(&self, io: Io) {
        // The read lock is held until a hung operation is parked, so that `set_rules`
        // (which takes it for writing) cannot remove the rule in between and leave the
        // operation hung by a rule that no longer exists.
        let rules = self.rules.read();
        let now = Instant::now();
        let Some((rule, window)) = rules
            .iter()
            .find(|a| a.rule.covers(&io) && a.applies(now))
            .map(|a| (a.rule, a.window_end()))
        else {
            drop(rules);
            self.shared.inner.submit(io);
            return;
        };
        self.injected.fetch_add(1, Ordering::Relaxed);
        let timed = match rule.action {
            Action::Fail(e) => {
                drop(rules);
                io.complete(Err(e));
                return;
            }
            // A due time past what `Instant` can hold never comes: held like `hang`.
            Action::Delay(d) | Action::HangFor(d) => now.checked_add(d),
            Action::Stall(_) => window,
            Action::Hang => None,
        };
        if timed.is_some() && !self.ensure_timer() {
            drop(rules);
            self.shared.inner.submit(io);
            return;
        }
        let mut st = self.shared.state.lock();
        let seq = st.seq;
        st.seq += 1;
        match (rule.action, timed) {
            (Action::Delay(_), Some(due)) => st.delayed.push(Pending { due, seq, io }),
            (_, until) => st.hung.push(Held {
                seq,
                io,
                until,
                rule,
            }),
        }
        drop(st);
        drop(rules);
        if timed.is_some() {
            self.shared.cv.notify_one();
        }
    }
}

impl Drop for FaultBackend {
    /// Stops the timer thread and releases every held operation to the inner backend, in
    /// arrival order (see the module docs).
    fn drop(&mut self) {
        self.shared.state.lock().shutdown = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.timer.lock().take() {
            // The last reference can go on the timer thread itself (an operation it submitted
            // completed and freed the device holding this wrapper): it exits on its own.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        let mut held: Vec<(u64, Io)> = {
            let mut st = self.shared.state.lock();
            let delayed = std::mem::take(&mut st.delayed);
            let hung = std::mem::take(&mut st.hung);
            delayed
                .into_iter()
                .map(|p| (p.seq, p.io))
                .chain(hung.into_iter().map(|h| (h.seq, h.io)))
                .collect()
        };
        held.sort_by_key(|(seq, _)| *seq);
        for (_, io) in held {
            self.shared.inner.submit(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::io::{IoResult, Waiter};
    use crate::backend::ram::RamBackend;
    use tcmu_ring::IoVecs;

    const SIZE: u64 = 1 << 20;

    fn fault(rules: &str) -> (Arc<RamBackend>, FaultBackend) {
        let ram = Arc::new(RamBackend::new(SIZE));
        let fb = FaultBackend::new(
            Arc::clone(&ram) as Arc<dyn Backend>,
            parse_rules(rules).unwrap_or_else(|e| panic!("{e}")),
        );
        (ram, fb)
    }

    /// The iovecs of `buf`; the tests wait for each Io before they touch `buf` again.
    fn iov(buf: &mut [u8]) -> IoVecs {
        let mut v = IoVecs::with_capacity(1);
        let n = buf.len();
        // SAFETY: every caller keeps `buf` alive and untouched until the Io completes (it
        // waits for the Waiter first).
        unsafe { v.push_buffer(buf, n) };
        v
    }

    /// Submit `op` on `buf` at `off` through `b`; the waiter gets the result.
    fn start(b: &dyn Backend, op: IoOp, off: u64, buf: &mut [u8]) -> Arc<Waiter> {
        let w = Waiter::new();
        let (len, v) = match op {
            IoOp::Flush => (0, IoVecs::default()),
            IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => (buf.len() as u64, IoVecs::default()),
            _ => (buf.len() as u64, iov(buf)),
        };
        b.submit(Io::for_waiter(op, off, len, v, &w));
        w
    }

    fn run(b: &dyn Backend, op: IoOp, off: u64, buf: &mut [u8]) -> IoResult {
        start(b, op, off, buf).wait().0
    }

    fn read_back(b: &dyn Backend, off: u64) -> Vec<u8> {
        let mut buf = vec![0xEEu8; 512];
        run(b, IoOp::Read, off, &mut buf).unwrap();
        buf
    }

    const OPS: [(&str, IoOp); 5] = [
        ("read", IoOp::Read),
        ("write", IoOp::Write { fua: false }),
        ("flush", IoOp::Flush),
        ("unmap", IoOp::Unmap { fua: false }),
        (
            "write_zeroes",
            IoOp::WriteZeroes {
                unmap: false,
                fua: false,
            },
        ),
    ];

    #[test]
    fn fail_completes_each_op_with_the_injected_errno_and_spares_the_others() {
        for e in [
            Errno::EIO,
            Errno::ETIMEDOUT,
            Errno::ESHUTDOWN,
            Errno::ENOTCONN,
            Errno::ENOSPC,
        ] {
            for (name, op) in OPS {
                let (ram, fb) = fault(&format!("{name}:fail={e:?}"));
                let mut buf = vec![7u8; 512];
                assert_eq!(run(&fb, op, 0, &mut buf), Err(e), "{name} {e:?}");
                for (other, op2) in OPS {
                    if other != name {
                        assert_eq!(run(&fb, op2, 0, &mut buf), Ok(()), "{other} passes");
                    }
                }
                assert_eq!(fb.injected(), 1);
                drop(ram);
            }
        }
        // A failed write leaves the medium as it was.
        let (ram, fb) = fault("write:fail=EIO");
        let mut buf = vec![9u8; 512];
        assert_eq!(
            run(&fb, IoOp::Write { fua: true }, 4096, &mut buf),
            Err(Errno::EIO)
        );
        assert_eq!(read_back(ram.as_ref(), 4096), vec![0u8; 512]);
        // `any` fails everything.
        let (_ram, fb) = fault("any:fail=ESHUTDOWN");
        for (name, op) in OPS {
            assert_eq!(run(&fb, op, 0, &mut buf), Err(Errno::ESHUTDOWN), "{name}");
        }
    }

    #[test]
    fn delay_submits_later_without_blocking_the_caller() {
        let d = Duration::from_millis(80);
        for (name, op) in OPS {
            let (ram, fb) = fault(&format!("{name}:delay=80ms"));
            let mut buf = vec![0x5Au8; 512];
            let t = Instant::now();
            let w = start(&fb, op, 8192, &mut buf);
            assert!(t.elapsed() < d / 2, "{name}: submit returned at once");
            assert_eq!(fb.delayed(), 1, "{name}");
            assert_eq!(w.wait().0, Ok(()), "{name}");
            assert!(
                t.elapsed() >= d,
                "{name}: completed after {:?}",
                t.elapsed()
            );
            assert_eq!(fb.delayed(), 0);
            if matches!(op, IoOp::Write { .. }) {
                assert_eq!(read_back(ram.as_ref(), 8192), buf);
            }
        }
        // Shorter delays come back first; equal ones in submission order.
        let (_ram, fb) = fault("write:delay=150ms;read:delay=30ms");
        let (mut a, mut b) = (vec![1u8; 512], vec![2u8; 512]);
        let t = Instant::now();
        let wa = start(&fb, IoOp::Write { fua: false }, 0, &mut a);
        let wb = start(&fb, IoOp::Read, 0, &mut b);
        assert_eq!(wb.wait().0, Ok(()));
        let tb = t.elapsed();
        assert!(
            tb < Duration::from_millis(150),
            "read not held behind the write"
        );
        assert_eq!(b, vec![0u8; 512], "read ran before the delayed write");
        assert_eq!(wa.wait().0, Ok(()));
        assert!(t.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn hang_holds_until_released_then_the_data_is_right() {
        for (name, op) in OPS {
            let (ram, fb) = fault(&format!("{name}:hang"));
            // Put a known pattern on the medium first (through the inner backend).
            let mut pat = vec![0xA5u8; 512];
            run(ram.as_ref(), IoOp::Write { fua: false }, 0, &mut pat).unwrap();
            let mut buf = if op == IoOp::Read {
                vec![0u8; 512]
            } else {
                vec![0x3Cu8; 512]
            };
            let w = start(&fb, op, 0, &mut buf);
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(fb.hung(), 1, "{name} held");
            assert_eq!(
                read_back(ram.as_ref(), 0),
                pat,
                "{name}: nothing happened yet"
            );
            assert_eq!(fb.release_hung(), 1);
            assert_eq!(fb.hung(), 0);
            assert_eq!(w.wait().0, Ok(()), "{name}");
            let now = read_back(ram.as_ref(), 0);
            match op {
                IoOp::Read => assert_eq!(buf, pat, "read returned the data"),
                IoOp::Write { .. } => assert_eq!(now, buf),
                IoOp::Flush => assert_eq!(now, pat),
                IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => assert_eq!(now, vec![0u8; 512]),
                IoOp::CompareAndWrite { .. } => unreachable!("not one of OPS"),
            }
            // The rule stays: the next one hangs again.
            let w = start(&fb, op, 0, &mut buf);
            assert_eq!(fb.hung(), 1);
            assert_eq!(fb.release_hung(), 1);
            assert_eq!(w.wait().0, Ok(()));
        }
    }

    #[test]
    fn released_ios_reach_the_inner_backend_in_arrival_order() {
        let (ram, fb) = fault("write:hang");
        let mut bufs: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 512]).collect();
        let ws: Vec<_> = bufs
            .iter_mut()
            .map(|b| start(&fb, IoOp::Write { fua: false }, 0, b))
            .collect();
        assert_eq!(fb.hung(), 5);
        assert_eq!(fb.release_hung(), 5);
        for w in ws {
            assert_eq!(w.wait().0, Ok(()));
        }
        assert_eq!(
            read_back(ram.as_ref(), 0),
            vec![5u8; 512],
            "last write wins"
        );
    }

    #[test]
    fn stall_holds_everything_in_its_window_then_passes() {
        let (ram, fb) = fault("any:stall=300ms,count=1");
        let t = Instant::now();
        let (mut a, mut b) = (vec![5u8; 512], vec![6u8; 512]);
        let wa = start(&fb, IoOp::Write { fua: false }, 0, &mut a);
        std::thread::sleep(Duration::from_millis(100));
        let wb = start(&fb, IoOp::Write { fua: false }, 512, &mut b);
        assert_eq!(
            fb.hung(),
            2,
            "both held: the second arrived inside the window"
        );
        assert_eq!(wa.wait().0, Ok(()));
        assert_eq!(wb.wait().0, Ok(()));
        let held = t.elapsed();
        assert!(
            held >= Duration::from_millis(290) && held < Duration::from_millis(1500),
            "released when the window closed: {held:?}"
        );
        assert_eq!(read_back(ram.as_ref(), 512), b);
        // count=1: the outage is over, later operations pass at once.
        let t = Instant::now();
        let mut c = vec![7u8; 512];
        assert_eq!(run(&fb, IoOp::Write { fua: false }, 1024, &mut c), Ok(()));
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(
            parse_rules("write:stall=1m").unwrap()[0].action,
            Action::Stall(Duration::from_secs(60))
        );
        assert_eq!(
            format_rules(&parse_rules("write:stall=1m").unwrap()),
            "write:stall=1m"
        );
    }

    #[test]
    fn hang_for_releases_on_its_own_and_clearing_the_rule_releases_hang() {
        let (ram, fb) = fault("write:hang=100ms");
        let mut buf = vec![4u8; 512];
        let t = Instant::now();
        let w = start(&fb, IoOp::Write { fua: false }, 0, &mut buf);
        assert!(t.elapsed() < Duration::from_millis(50));
        assert_eq!(fb.hung(), 1);
        assert_eq!(w.wait().0, Ok(()));
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert_eq!(fb.hung(), 0);
        assert_eq!(read_back(ram.as_ref(), 0), buf);
        // release_hung also ends a timed hang early.
        let w = start(&fb, IoOp::Write { fua: false }, 0, &mut buf);
        assert_eq!(fb.release_hung(), 1);
        assert_eq!(w.wait().0, Ok(()));

        // set_rules releases what a removed rule held, and keeps what a kept rule holds.
        let (_ram, fb) = fault("read:hang;write:hang");
        let (mut a, mut b) = (vec![0u8; 512], vec![1u8; 512]);
        let wa = start(&fb, IoOp::Read, 0, &mut a);
        let wb = start(&fb, IoOp::Write { fua: false }, 0, &mut b);
        assert_eq!(fb.hung(), 2);
        fb.set_rules(parse_rules("write:hang").unwrap());
        assert_eq!(wa.wait().0, Ok(()), "read released: its rule is gone");
        assert_eq!(fb.hung(), 1, "write still held by a rule that stays");
        fb.set_rules(Vec::new());
        assert_eq!(wb.wait().0, Ok(()));
        assert_eq!(fb.hung(), 0);
        assert!(fb.rules().is_empty());
        let mut c = vec![0u8; 512];
        assert_eq!(run(&fb, IoOp::Read, 0, &mut c), Ok(()), "no rule: passes");
    }

    #[test]
    fn every_and_count_pick_which_operations_fault() {
        let outcomes = |rules: &str, n: usize| -> Vec<bool> {
            let (_ram, fb) = fault(rules);
            let mut buf = vec![0u8; 512];
            (0..n)
                .map(|_| run(&fb, IoOp::Write { fua: false }, 0, &mut buf).is_err())
                .collect()
        };
        let (t, f) = (true, false);
        assert_eq!(outcomes("write:fail=EIO", 3), [t, t, t]);
        assert_eq!(outcomes("write:fail=EIO,every=3", 7), [f, f, t, f, f, t, f]);
        assert_eq!(outcomes("write:fail=EIO,count=2", 5), [t, t, f, f, f]);
        assert_eq!(
            outcomes("write:fail=EIO,every=2,count=2", 8),
            [f, t, f, t, f, f, f, f]
        );
        assert_eq!(outcomes("write:fail=EIO,count=0", 2), [f, f]);
        // Only operations of the rule's kinds count towards `every`.
        let (_ram, fb) = fault("write:fail=EIO,every=2");
        let mut buf = vec![0u8; 512];
        let w = IoOp::Write { fua: false };
        assert_eq!(run(&fb, w, 0, &mut buf), Ok(()));
        assert_eq!(run(&fb, IoOp::Read, 0, &mut buf), Ok(()));
        assert_eq!(run(&fb, w, 0, &mut buf), Err(Errno::EIO));
        // A rule that does not fire lets the next one try.
        let (_ram, fb) = fault("write:fail=EIO,every=2;any:fail=ENOSPC,count=1");
        assert_eq!(run(&fb, w, 0, &mut buf), Err(Errno::ENOSPC));
        assert_eq!(run(&fb, w, 0, &mut buf), Err(Errno::EIO));
        assert_eq!(run(&fb, w, 0, &mut buf), Ok(()));
        assert_eq!(fb.injected(), 2);
        // set_rules restarts the counters.
        fb.set_rules(parse_rules("write:fail=EIO,count=1").unwrap());
        assert_eq!(run(&fb, w, 0, &mut buf), Err(Errno::EIO));
        assert_eq!(run(&fb, w, 0, &mut buf), Ok(()));
    }

    #[test]
    fn dropping_the_wrapper_releases_what_it_holds() {
        let (ram, fb) = fault("write:hang;read:delay=10s");
        let (mut a, mut b) = (vec![8u8; 512], vec![0u8; 512]);
        let wa = start(&fb, IoOp::Write { fua: false }, 0, &mut a);
        let wb = start(&fb, IoOp::Read, 512, &mut b);
        let t = Instant::now();
        drop(fb);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "drop did not wait for the delay"
        );
        assert_eq!(wa.wait().0, Ok(()));
        assert_eq!(wb.wait().0, Ok(()));
        assert_eq!(read_back(ram.as_ref(), 0), a);
    }

    #[test]
    fn wrapper_delegates_and_never_completes_inline() {
        let (ram, fb) =
            fault("write:fail=EIO;read:delay=200ms;any:hang;flush:fail=ETIMEDOUT,count=3");
        assert!(!fb.completes_inline());
        assert_eq!(fb.size(), ram.size());
        assert_eq!(fb.caps(), ram.caps());
        assert_eq!(fb.resize(SIZE * 2), Err(Errno::EOPNOTSUPP));
        assert_eq!(
            fb.describe(),
            format!(
                "fault(write:fail=EIO;read:delay=200ms;any:hang;flush:fail=ETIMEDOUT,count=3)+{}",
                ram.describe()
            )
        );
        assert_eq!(fb.inner().describe(), ram.describe());
    }

    #[test]
    fn at_narrows_a_rule_to_one_offset_and_each_rule_releases_its_own() {
        let (ram, fb) = fault("read:hang,at=4096;read:hang,at=8192;write:fail=EIO,at=0");
        let mut r = vec![1u8; 512];
        assert_eq!(
            run(&fb, IoOp::Read, 0, &mut r),
            Ok(()),
            "read elsewhere passes"
        );
        let mut buf = vec![6u8; 512];
        assert_eq!(
            run(&fb, IoOp::Write { fua: false }, 512, &mut buf),
            Ok(()),
            "write elsewhere passes"
        );
        assert_eq!(
            run(&fb, IoOp::Write { fua: false }, 0, &mut buf),
            Err(Errno::EIO),
            "write at 0 fails"
        );
        let (mut a, mut b) = (vec![0u8; 512], vec![0u8; 512]);
        let wa = start(&fb, IoOp::Read, 4096, &mut a);
        let wb = start(&fb, IoOp::Read, 8192, &mut b);
        assert_eq!(fb.hung(), 2, "both reads at their offsets held");
        // Removing the second rule releases only what it held.
        let keep = parse_rules("read:hang,at=4096").unwrap();
        fb.set_rules(keep);
        assert_eq!(wb.wait().0, Ok(()));
        assert_eq!(fb.hung(), 1, "the read at 4096 is still held");
        fb.set_rules(Vec::new());
        assert_eq!(wa.wait().0, Ok(()));
        assert_eq!(read_back(ram.as_ref(), 512), vec![6u8; 512]);
        // A rule with an offset never applies to the ping, which has none.
        let (_ram, fb) = fault("any:fail=EIO,at=0");
        assert_eq!(fb.ping(), Ok(()));
        assert_eq!(
            format_rules(&parse_rules("read:hang,every=2,at=4096").unwrap()),
            "read:hang,every=2,at=4096"
        );
    }

    #[test]
    fn rules_parse_and_format_back() {
        let rules = parse_rules(
            " write:fail=EIO ; read:delay=200ms;any:hang;flush:fail=ETIMEDOUT,count=3;\
             read|unmap:hang=1m30s,every=4;write_zeroes:fail=5;",
        )
        .unwrap();
        assert_eq!(
            rules,
            [
                Rule::new(OpSet::WRITE, Action::Fail(Errno::EIO)),
                Rule::new(OpSet::READ, Action::Delay(Duration::from_millis(200))),
                Rule::new(OpSet::ANY, Action::Hang),
                Rule {
                    count: Some(3),
                    ..Rule::new(OpSet::FLUSH, Action::Fail(Errno::ETIMEDOUT))
                },
                Rule {
                    every: 4,
                    ..Rule::new(
                        OpSet::READ | OpSet::UNMAP,
                        Action::HangFor(Duration::from_secs(90))
                    )
                },
                Rule::new(OpSet::WRITE_ZEROES, Action::Fail(Errno::EIO)),
            ]
        );
        let text = format_rules(&rules);
        assert_eq!(
            text,
            "write:fail=EIO;read:delay=200ms;any:hang;flush:fail=ETIMEDOUT,count=3;\
             read|unmap:hang=90s,every=4;write_zeroes:fail=EIO"
        );
        assert_eq!(parse_rules(&text).unwrap(), rules);
        assert!(parse_rules("").unwrap().is_empty());
        assert!(parse_rules(" ; ").unwrap().is_empty());
        assert_eq!(
            parse_rules("WRITE:FAIL=eio").unwrap(),
            [Rule::new(OpSet::WRITE, Action::Fail(Errno::EIO))]
        );
        // Found by the cfgstring fuzz target: an errno given by number outside the list of
        // common names (`077` is EBADFD) was written back as a name the parser refused.
        let odd = parse_rules("write:fail=077").unwrap();
        assert_eq!(odd, [Rule::new(OpSet::WRITE, Action::Fail(Errno::EBADFD))]);
        assert_eq!(format_rules(&odd), "write:fail=EBADFD");
        assert_eq!(parse_rules(&format_rules(&odd)).unwrap(), odd);
        for n in 1..200 {
            let e = Errno::from_raw(n);
            if e != Errno::UnknownErrno {
                let r = vec![Rule::new(OpSet::READ, Action::Fail(e))];
                assert_eq!(parse_rules(&format_rules(&r)).ok(), Some(r), "errno {n}");
            }
        }
    }

    #[test]
    fn parse_errors_name_the_bad_token() {
        for (text, token, why) in [
            ("write", "write", "expected <ops>:<action>"),
            ("wrte:fail=EIO", "wrte", "unknown operation"),
            ("read|bogus:hang", "bogus", "unknown operation"),
            (":hang", "", "unknown operation"),
            ("write:explode", "explode", "unknown action"),
            ("write:", "", "unknown action"),
            ("write:fail", "fail", "needs an errno"),
            ("write:fail=EFOO", "fail=EFOO", "unknown errno"),
            ("write:fail=0", "fail=0", "not a known errno"),
            ("write:fail=-5", "fail=-5", "not a known errno"),
            ("write:fail=99999", "fail=99999", "not a known errno"),
            ("read:delay", "delay", "needs a duration"),
            ("read:delay=200", "delay=200", "missing unit"),
            ("read:delay=fast", "delay=fast", "bad duration"),
            ("read:hang=-1s", "hang=-1s", "bad duration"),
            ("read:hang,every=0", "every=0", "at least 1"),
            ("read:hang,every=x", "every=x", "not a whole number"),
            ("read:hang,count=-1", "count=-1", "not a whole number"),
            ("read:hang,times=3", "times=3", "unknown option"),
            (
                "read:hang,3",
                "3",
                "expected every=<N>, count=<N> or at=<OFFSET>",
            ),
            ("read:hang,at=x", "at=x", "not a whole number"),
            (
                "read:hang,every=4294967296",
                "every=4294967296",
                "too large",
            ),
        ] {
            let e = parse_rules(&format!("flush:hang;{text}")).expect_err(text);
            assert_eq!(e.token, token, "{text}: {e}");
            assert_eq!(e.rule, text.trim());
            let msg = e.to_string();
            assert!(msg.contains(&format!("bad token `{token}`")), "{msg}");
            assert!(msg.contains(why), "{text}: {msg:?} lacks {why:?}");
        }
    }
}
