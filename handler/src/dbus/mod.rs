//! The DBus service `org.kernel.TCMUService1` on the system bus, as targetcli expects it
//! from a TCMU handler daemon (docs/kernel-abi.md §8.2):
//!
//! ```text
//! /org/kernel/TCMUService1              org.freedesktop.DBus.ObjectManager
//! /org/kernel/TCMUService1/<subtype>    org.kernel.TCMUService1
//!     property ConfigDesc   s           the cfgstring syntax (`targetcli help create`)
//!     method CheckConfig(s) -> (b, s)   validates "<subtype>/<cfgstring>" before `create`
//!     method ChangeMedium(s, t, s) -> (i, s)   refused: not supported
//! ```
//!
//! targetcli lists one `user:<subtype>` backstore per object the ObjectManager returns, shows
//! `ConfigDesc` in `help create` and calls `CheckConfig` with the full `<subtype>/<cfgstring>`
//! before it creates anything. `CheckConfig` uses [`crate::backend::registry::check_config`],
//! so it checks what opening the device would (syntax, options, and within a bounded time
//! whether the file's directory, the RBD image or the gluster volume is there).
//!
//! The service runs on zbus's own executor thread; each check runs on a thread of its own and
//! is bounded, so a slow backend neither blocks other callers nor the daemon. [`start`] takes
//! the bus name before the daemon opens any device (DBus activation must not wait on a slow
//! backend). No system bus is a warning: the daemon serves devices without it.
//!
//! Only root may call the methods: the policy file `systemd/org.kernel.TCMUService1.conf`
//! says so to the bus, and `CheckConfig` asks the bus for the caller's uid as well (a check
//! probes paths and cluster objects, which an unprivileged user must not learn about).

use crate::backend::registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use zbus::blocking::Connection;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

/// The well-known bus name.
pub const BUS_NAME: &str = "org.kernel.TCMUService1";
/// The ObjectManager's path; each subtype is an object below it.
pub const ROOT_PATH: &str = "/org/kernel/TCMUService1";
/// The interface of each subtype's object.
pub const INTERFACE: &str = "org.kernel.TCMUService1";
/// How long a `CheckConfig` may probe the backend (a directory, an RBD image, a gluster
/// volume). targetcli waits 25 s for the answer (GDBus's default).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Checks running at once; more are answered "busy" rather than piling up threads.
const MAX_CHECKS: usize = 8;
/// Longest wait in [`start`] for the bus before the daemon goes on opening devices.
const START_WAIT: Duration = Duration::from_secs(5);

/// One subtype's object.
struct Handler {
    subtype: &'static str,
    desc: String,
    checks: Arc<AtomicUsize>,
    timeout: Duration,
}

#[zbus::interface(name = "org.kernel.TCMUService1")]
impl Handler {
    /// The cfgstring syntax of this subtype, for people.
    #[zbus(property(emits_changed_signal = "const"), name = "ConfigDesc")]
    fn config_desc(&self) -> String {
        self.desc.clone()
    }

    /// Validate `<subtype>/<cfgstring>` as opening a device with it would.
    #[zbus(name = "CheckConfig", out_args("is_valid", "message"))]
    async fn check_config(
        &self,
        configstr: String,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> (bool, String) {
        if let Err(why) = caller_is_root(&header, conn).await {
            tracing::warn!(subtype = self.subtype, "DBus CheckConfig refused: {why}");
            return (false, why);
        }
        let Some(cfg) = strip_subtype(self.subtype, &configstr) else {
            return (
                false,
                format!(
                    "expected \"{0}/<cfgstring>\" (the subtype, a slash, then the {0} configuration), got {configstr:?}",
                    self.subtype
                ),
            );
        };
        let running = self.checks.fetch_add(1, Ordering::AcqRel);
        // Held by the check's own thread: a check that outlives its answer (a backend that
        // ignores its timeout) keeps its slot, so stuck threads are bounded by MAX_CHECKS.
        let slot = Slot(Arc::clone(&self.checks));
        if running >= MAX_CHECKS {
            return (
                false,
                format!("busy: {running} checks in progress or stuck in their backend, try again"),
            );
        }
        let (subtype, cfg, timeout) = (self.subtype, cfg.to_string(), self.timeout);
        let t0 = Instant::now();
        let verdict = blocking::unblock(move || {
            bounded_check(
                subtype,
                move || registry::check_config(subtype, &cfg, timeout),
                timeout,
                slot,
            )
        })
        .await;
        let ms = t0.elapsed().as_millis();
        match verdict {
            Ok(()) => {
                tracing::info!(subtype, cfgstring = %configstr, ms, "DBus CheckConfig: valid");
                (true, "ok".to_string())
            }
            Err(why) => {
                tracing::info!(subtype, cfgstring = %configstr, ms, "DBus CheckConfig: invalid: {why}");
                (false, why)
            }
        }
    }

    /// targetcli's `changemedium`: not supported (tcmu-runner has no such method either);
    /// the answer says what to do instead.
    #[zbus(name = "ChangeMedium", out_args("rc", "message"))]
    fn change_medium(&self, name: String, size: u64, cfgstring: String) -> (i32, String) {
        let _ = (size, cfgstring);
        (
            -libc::EOPNOTSUPP,
            format!(
                "tcmu-warden does not change the medium of {name:?}; write dev_size or dev_config to the backstore's configfs control file, or delete and re-create it"
            ),
        )
    }
}

/// Gives a `CheckConfig` slot back when the call ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `ConfigDesc` of `subtype`: the backend's description of its cfgstring
/// ([`registry::config_desc`]), then how targetcli takes it (it adds `<subtype>/` itself) and
/// the options every subtype takes.
#[must_use]
pub fn config_desc(subtype: &str) -> Option<String> {
    let desc = registry::config_desc(subtype)?;
    Some(format!(
        "{desc}\ntargetcli adds the \"{subtype}/\" itself: give cfgstring= what follows it.\n\
         Options of every subtype, appended as ;key=value: {} (tcmu-warden's docs/config.md).",
        crate::config::DEVICE_KEYS.join(", ")
    ))
}

/// `Ok` if the bus says the caller is uid 0.
async fn caller_is_root(
    header: &zbus::message::Header<'_>,
    conn: &zbus::Connection,
) -> Result<(), String> {
    let sender = header
        .sender()
        .ok_or_else(|| "the call has no sender".to_string())?;
    let proxy = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| format!("cannot ask the bus who is calling: {e}"))?;
    let uid = proxy
        .get_connection_unix_user(sender.clone().into())
        .await
        .map_err(|e| format!("cannot ask the bus who is calling: {e}"))?;
    if uid == 0 {
        Ok(())
    } else {
        Err(format!(
            "only root may check configurations (caller {sender} is uid {uid})"
        ))
    }
}

/// The cfgstring after `<subtype>/`, or None when `full` does not start with it.
fn strip_subtype<'a>(subtype: &str, full: &'a str) -> Option<&'a str> {
    full.strip_prefix(subtype)?.strip_prefix('/')
}

/// Run `check` on a thread of its own and wait at most `timeout` plus a grace period: a
/// backend that ignores its timeout is reported, not waited for. The thread holds `slot`
/// until the check really ends.
fn bounded_check(
    subtype: &'static str,
    check: impl FnOnce() -> Result<(), String> + Send + 'static,
    timeout: Duration,
    slot: Slot,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("check-{subtype}"))
        .spawn(move || {
            let _slot = slot;
            let _ = tx.send(check());
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start the check: {e}"));
    }
    let limit = timeout + Duration::from_secs(2);
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the {subtype} backend did not answer within {} s",
            limit.as_secs()
        )),
    }
}

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The subtypes to export (normally [`registry::SUBTYPES`]).
    pub subtypes: Vec<&'static str>,
    /// The bound of each `CheckConfig`.
    pub check_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            subtypes: registry::SUBTYPES.to_vec(),
            check_timeout: CHECK_TIMEOUT,
        }
    }
}

/// Keeps the service up; dropping it closes the connection, and the bus releases the name
/// (no call on the way out: a bus that does not answer cannot delay the daemon's stop).
pub struct Service {
    conn: Option<Connection>,
}

impl Service {
    /// Whether this process owns the bus name.
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.conn.is_some()
    }
}

/// Connect to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the standard socket), export the
/// objects and take [`BUS_NAME`]. Waits at most a few seconds; a missing bus, a refused name
/// or a bus that does not answer is logged as a warning and gives a [`Service`] that serves
/// nothing, so the daemon goes on serving devices.
#[must_use]
pub fn start(opts: &Options) -> Service {
    let (tx, rx) = mpsc::channel();
    let opts = opts.clone();
    // The connection set-up runs on a thread of its own so that a bus that never answers
    // cannot hold up the daemon; the connection itself is handed back.
    let spawned = std::thread::Builder::new()
        .name("dbus-start".into())
        .spawn(move || {
            let _ = tx.send(connect(&opts));
        });
    if let Err(e) = spawned {
        tracing::warn!("DBus service not started: cannot start a thread: {e}");
        return Service { conn: None };
    }
    match rx.recv_timeout(START_WAIT) {
        Ok(Ok(conn)) => {
            tracing::info!(
                name = BUS_NAME,
                unique = conn
                    .unique_name()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                "DBus service on the system bus"
            );
            Service { conn: Some(conn) }
        }
        Ok(Err(e)) => {
            tracing::warn!(
                "DBus service not available (targetcli will not list user: backstores): {e}"
            );
            Service { conn: None }
        }
        Err(_) => {
            tracing::warn!(
                "DBus service not available: the system bus did not answer within {} s",
                START_WAIT.as_secs()
            );
            Service { conn: None }
        }
    }
}

fn connect(opts: &Options) -> Result<Connection, String> {
    let checks = Arc::new(AtomicUsize::new(0));
    let mut b = zbus::blocking::connection::Builder::system()
        .map_err(|e| format!("no system bus: {e}"))?
        .serve_at(ROOT_PATH, zbus::fdo::ObjectManager)
        .map_err(|e| e.to_string())?;
    for &subtype in &opts.subtypes {
        let Some(desc) = config_desc(subtype) else {
            continue;
        };
        let h = Handler {
            subtype,
            desc,
            checks: Arc::clone(&checks),
            timeout: opts.check_timeout,
        };
        b = b
            .serve_at(format!("{ROOT_PATH}/{subtype}"), h)
            .map_err(|e| e.to_string())?;
    }
    let conn = b.build().map_err(|e| format!("no system bus: {e}"))?;
    match conn.request_name_with_flags(BUS_NAME, RequestNameFlags::DoNotQueue.into()) {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => Ok(conn),
        Ok(RequestNameReply::Exists | RequestNameReply::InQueue) | Err(zbus::Error::NameTaken) => {
            Err(format!(
                "{BUS_NAME} is owned by another process (tcmu-runner?); stop it, e.g. systemctl mask --now tcmu-runner"
            ))
        }
        Err(e) => Err(format!(
            "cannot own {BUS_NAME}: {e} (is the policy file org.kernel.TCMUService1.conf installed in /usr/share/dbus-1/system.d/ and are we root?)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_that_outlives_its_answer_keeps_its_slot_until_it_ends() {
        let checks = Arc::new(AtomicUsize::new(1));
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = Arc::clone(&release);
        let hang = move || {
            while !r.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        };
        let t = Instant::now();
        let e = bounded_check("file", hang, Duration::ZERO, Slot(Arc::clone(&checks))).unwrap_err();
        assert!(e.contains("did not answer within 2 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4));
        assert_eq!(
            checks.load(Ordering::Acquire),
            1,
            "the stuck check still counts"
        );
        release.store(true, Ordering::Relaxed);
        let t = Instant::now();
        while checks.load(Ordering::Acquire) != 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "slot not freed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_subtype_prefix_is_required_and_stripped() {
        assert_eq!(strip_subtype("file", "file//tmp/a"), Some("/tmp/a"));
        assert_eq!(strip_subtype("file", "file/"), Some(""));
        assert_eq!(strip_subtype("file", "/tmp/a"), None);
        assert_eq!(strip_subtype("file", "filex//tmp/a"), None);
        assert_eq!(strip_subtype("rbd", "file//tmp/a"), None);
    }

    #[test]
    fn config_desc_is_the_backends_and_says_how_targetcli_takes_it() {
        let d = config_desc("file").unwrap();
        assert!(d.starts_with(registry::config_desc("file").unwrap()), "{d}");
        assert!(d.contains("targetcli adds the \"file/\" itself"), "{d}");
        assert!(d.contains("appended as ;key=value: io_timeout,"), "{d}");
        assert!(config_desc("qcow").is_none());
    }

    #[test]
    fn a_check_that_does_not_finish_is_reported() {
        let slot = || Slot(Arc::new(AtomicUsize::new(1)));
        let t = Duration::from_millis(10);
        let e = bounded_check(
            "qcow",
            move || registry::check_config("qcow", "x", t),
            t,
            slot(),
        )
        .unwrap_err();
        assert!(e.contains("unsupported subtype"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let ok = format!("{}/a.img", dir.path().display());
        let t = Duration::from_secs(1);
        bounded_check(
            "file",
            move || registry::check_config("file", &ok, t),
            t,
            slot(),
        )
        .unwrap();
    }
}
