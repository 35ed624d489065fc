//! The DBus service `org.kernel.TCMUService1` as targetcli sees it, on a private bus: each
//! test starts its own `dbus-daemon` (a system-bus configuration of its own that includes the
//! shipped policy file `systemd/org.kernel.TCMUService1.conf`), points the daemon at it with
//! `DBUS_SYSTEM_BUS_ADDRESS`, and calls it the way targetcli does (python3 with Gio), with
//! `busctl`, and with `dbus-send` as `nobody`. Also: tcmu.conf's `log_level` and `log_dir`
//! followed at run time, and where each logging value came from.
//!
//! Needs `dbus-daemon`, `busctl` (systemd), python3-gi and python3-dbus
//! (`scripts/install-dbus-deps.sh`); without `dbus-daemon` the tests say SKIPPED. Owning the
//! name needs root (the policy), so as non-root they say SKIPPED too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tcmu-warden");
const NAME: &str = "org.kernel.TCMUService1";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the DBus tests can run here; says why not.
fn can_run() -> bool {
    if !have("dbus-daemon") {
        eprintln!("SKIPPED: dbus-daemon is not installed (scripts/install-dbus-deps.sh)");
        return false;
    }
    if !is_root() {
        eprintln!("SKIPPED: only root may own {NAME} (the shipped policy); run as root");
        return false;
    }
    true
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private "system" bus with Debian's default system policy and our policy file.
struct Bus {
    dir: tempfile::TempDir,
    child: Child,
}

impl Bus {
    fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        // Unprivileged callers must reach the socket (the policy is what refuses them).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let sock = dir.path().join("system_bus_socket");
        let conf = dir.path().join("bus.conf");
        let policy = repo_file("systemd/org.kernel.TCMUService1.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{}</include>
</busconfig>
"#,
                sock.display(),
                policy.canonicalize().unwrap().display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        wait_for("the bus socket", Duration::from_secs(10), || sock.exists());
        Bus { dir, child }
    }

    fn address(&self) -> String {
        format!(
            "unix:path={}",
            self.dir.path().join("system_bus_socket").display()
        )
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tcmu-warden with no device, its log in a file.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start(bus_address: &str, extra: &[&str]) -> Daemon {
        Daemon::start_with(bus_address, extra, "", None)
    }

    /// Start with tcmu-warden's config file and tcmu.conf (None: absent) in place.
    fn start_with(
        bus_address: &str,
        extra: &[&str],
        config_toml: &str,
        tcmu_conf: Option<&str>,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let uio = dir.path().join("uio");
        std::fs::create_dir(&uio).unwrap();
        std::fs::write(dir.path().join("config.toml"), config_toml).unwrap();
        if let Some(t) = tcmu_conf {
            std::fs::write(dir.path().join("tcmu.conf"), t).unwrap();
        }
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(BIN)
            .arg("--sysfs-uio")
            .arg(&uio)
            .arg("--control-socket")
            .arg(dir.path().join("ctl"))
            .args(["--metrics-addr", "off", "--no-mlock"])
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--tcmu-conf")
            .arg(dir.path().join("tcmu.conf"))
            .args(extra)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tcmu-warden");
        Daemon { dir, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn wait_log(&self, pattern: &str) {
        wait_for(
            &format!("log line {pattern:?}"),
            Duration::from_secs(15),
            || self.log().contains(pattern),
        );
    }

    fn tcmu_conf(&self) -> PathBuf {
        self.dir.path().join("tcmu.conf")
    }

    fn stop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "tcmu-warden exit: {st:?}\n{}", self.log());
                return;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("tcmu-warden did not stop on SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What targetcli-fb 2.1.53 does (`ui_backstore.py`): Gio on the system bus,
/// GetManagedObjects on the ObjectManager, a proxy per object, ConfigDesc from the returned
/// properties, CheckConfig('(s)', "<handler>/<cfgstring>"). Prints one line per result.
const TARGETCLI_LIKE: &str = r#"
import sys
from gi.repository import Gio
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
mgr = Gio.DBusProxy.new_sync(bus, Gio.DBusProxyFlags.NONE, None, 'org.kernel.TCMUService1',
                             '/org/kernel/TCMUService1', 'org.freedesktop.DBus.ObjectManager', None)
objs = mgr.GetManagedObjects()
for k in sorted(objs):
    name = k[k.rfind('/') + 1:]
    desc = objs[k].get('org.kernel.TCMUService1', {}).get('ConfigDesc', 'No description.')
    print('handler', name, repr(desc))
for name, cfg in zip(sys.argv[1::2], sys.argv[2::2]):
    iface = Gio.DBusProxy.new_sync(bus, Gio.DBusProxyFlags.NONE, None, 'org.kernel.TCMUService1',
                                   '/org/kernel/TCMUService1/' + name, 'org.kernel.TCMUService1', None)
    ok, msg = iface.CheckConfig('(s)', name + '/' + cfg)
    print('check', name, cfg, ok, msg)
"#;

#[test]
fn targetcli_lists_the_subtypes_reads_config_desc_and_checks_cfgstrings() {
    if !can_run() {
        return;
    }
    let bus = Bus::start();
    let mut d = Daemon::start(&bus.address(), &[]);
    d.wait_log("DBus service on the system bus");

    let tmp = tempfile::tempdir().unwrap();
    let good = format!("{}/lun0.img", tmp.path().display());
    let out = run(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(TARGETCLI_LIKE)
        .args(["file", &good, "file", "/nonexistent-dir/x.img"])
        .args(["file", &format!("{good};io_timout=5s"), "rbd", "pool/image"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let handlers: Vec<&str> = t
        .lines()
        .filter_map(|l| l.strip_prefix("handler "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(handlers, ["file", "glfs", "rbd"], "{t}");
    let file_desc = tcmu_warden::dbus::config_desc("file").unwrap();
    let first_line = file_desc.lines().next().unwrap();
    assert!(t.contains(first_line), "ConfigDesc of file is ours: {t}");
    assert!(t.contains(&format!("check file {good} True ok")), "{t}");
    assert!(
        t.contains("check file /nonexistent-dir/x.img False /nonexistent-dir/x.img does not exist"),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.contains("io_timout=5s False") && l.contains("unknown option io_timout=5s")),
        "a misspelt option is named: {t}"
    );
    assert!(t.contains("check rbd pool/image False"), "{t}");
    assert!(!Path::new(&good).exists(), "a check creates nothing");

    // busctl: the tree and the interface (ObjectManager at the root).
    let out = run(Command::new("busctl")
        .args(["--system", "tree", NAME])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()));
    let t = text(&out);
    for p in [
        "/org/kernel/TCMUService1/file",
        "/org/kernel/TCMUService1/rbd",
        "/org/kernel/TCMUService1/glfs",
    ] {
        assert!(t.contains(p), "{p} in the tree: {t}");
    }
    let out = run(Command::new("busctl")
        .args(["--system", "introspect", NAME, "/org/kernel/TCMUService1"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()));
    assert!(
        text(&out).contains("org.freedesktop.DBus.ObjectManager"),
        "{}",
        text(&out)
    );
    let out = run(Command::new("busctl")
        .args([
            "--system",
            "introspect",
            NAME,
            "/org/kernel/TCMUService1/file",
            INTERFACE_NAME,
        ])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()));
    let t = text(&out);
    assert!(
        t.contains(".CheckConfig") && t.contains(" s ") && t.contains("bs"),
        "{t}"
    );
    assert!(t.contains(".ConfigDesc") && t.contains("property"), "{t}");
    // A cfgstring without its subtype is refused with the expected form.
    let out = run(Command::new("busctl")
        .args([
            "--system",
            "call",
            NAME,
            "/org/kernel/TCMUService1/file",
            INTERFACE_NAME,
        ])
        .args(["CheckConfig", "s", "/tmp/x.img"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()));
    let t = text(&out);
    assert!(
        t.starts_with("bs false") && t.contains("expected \\\"file/<cfgstring>\\\""),
        "{t}"
    );
    d.wait_log("DBus CheckConfig: invalid");
    d.stop();
}

const INTERFACE_NAME: &str = "org.kernel.TCMUService1";

#[test]
fn only_root_may_call_or_own_the_service() {
    if !can_run() {
        return;
    }
    if !have("setpriv") {
        eprintln!("SKIPPED: setpriv (util-linux) is not installed");
        return;
    }
    let bus = Bus::start();
    let mut d = Daemon::start(&bus.address(), &[]);
    d.wait_log("DBus service on the system bus");
    let as_nobody = |args: &[&str]| {
        run(Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()))
    };
    let call = [
        "dbus-send",
        "--system",
        "--print-reply",
        "--dest=org.kernel.TCMUService1",
        "/org/kernel/TCMUService1/file",
        "org.kernel.TCMUService1.CheckConfig",
        "string:file//tmp/x.img",
    ];
    let out = as_nobody(&call);
    let t = text(&out);
    assert!(
        !out.status.success(),
        "nobody may not call CheckConfig: {t}"
    );
    assert!(t.contains("AccessDenied"), "refused by the bus policy: {t}");
    let out = as_nobody(&[
        "dbus-send",
        "--system",
        "--print-reply",
        "--dest=org.kernel.TCMUService1",
        "/org/kernel/TCMUService1",
        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
    ]);
    assert!(text(&out).contains("AccessDenied"), "{}", text(&out));
    // Nor own the name (python3-dbus, as rtslib's world would).
    let out = as_nobody(&[
        "/usr/bin/python3",
        "-c",
        "import dbus; print(dbus.SystemBus().request_name('org.kernel.TCMUService1'))",
    ]);
    assert!(
        !out.status.success() && text(&out).contains("AccessDenied"),
        "{}",
        text(&out)
    );
    // Root may.
    let out = run(Command::new(call[0])
        .args(&call[1..])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()));
    assert!(out.status.success(), "root may call: {}", text(&out));
    d.stop();
}

#[test]
fn no_bus_or_a_taken_name_is_a_warning_not_an_error() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nobus = format!("unix:path={}", dir.path().join("none").display());
    let mut d = Daemon::start(&nobus, &[]);
    d.wait_log("tcmu-warden ready");
    assert!(
        d.log().contains("WARN") && d.log().contains("DBus service not available"),
        "{}",
        d.log()
    );
    d.stop();

    let bus = Bus::start();
    let mut first = Daemon::start(&bus.address(), &[]);
    first.wait_log("DBus service on the system bus");
    let mut second = Daemon::start(&bus.address(), &[]);
    second.wait_log("tcmu-warden ready");
    assert!(
        second.log().contains("is owned by another process"),
        "{}",
        second.log()
    );
    second.stop();
    first.stop();
    // --no-dbus: not even tried.
    let mut off = Daemon::start(&bus.address(), &["--no-dbus"]);
    off.wait_log("tcmu-warden ready");
    assert!(!off.log().contains("DBus"), "{}", off.log());
    off.stop();
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn tcmu_conf_log_level_and_log_dir_follow_the_file_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let nobus = format!("unix:path={}", dir.path().join("none").display());
    let mut d = Daemon::start(&nobus, &["--no-dbus"]);
    d.wait_log("tcmu-warden ready");
    assert!(
        d.log().contains("log level info (from default)"),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("debug logging on"));

    // DEBUG (4): debug lines appear, and the log names the file and the value.
    write_atomically(&d.tcmu_conf(), "# tcmu-runner's file\nlog_level = 4\n");
    d.wait_log("debug logging on");
    let conf = d.tcmu_conf();
    assert!(
        d.log().contains(&format!(
            "log level debug (from {} log_level = 4 (DEBUG))",
            conf.display()
        )),
        "{}",
        d.log()
    );
    // WARNING (2): the change is still announced (at warn), info lines stop.
    write_atomically(&conf, "log_level = 2\n");
    d.wait_log("log level warn (from");
    let before = d.log().len();
    // log_dir: the log also goes to DIR/tcmu-warden.log (announced at info: not shown at
    // warn, but the file appears and receives lines at the new level).
    let logs = dir.path().join("logs");
    write_atomically(
        &conf,
        &format!("log_level = 3\nlog_dir = \"{}\"\n", logs.display()),
    );
    let file = logs.join("tcmu-warden.log");
    wait_for("the log file", Duration::from_secs(10), || {
        std::fs::read_to_string(&file).is_ok_and(|t| !t.is_empty())
    });
    d.wait_log("logging to");
    assert!(d.log()[before..].contains("log level info"), "{}", d.log());
    // Removed: back to the defaults.
    std::fs::remove_file(&conf).unwrap();
    wait_for(
        "the log file to be dropped",
        Duration::from_secs(10),
        || {
            d.log()
                .matches("no log file (default: no log file)")
                .count()
                == 2
        },
    );
    d.stop();
    let in_file = std::fs::read_to_string(&file).unwrap();
    assert!(in_file.contains("logging to"), "{in_file}");
    assert!(
        !in_file.contains("stopping"),
        "no more lines after the file was dropped: {in_file}"
    );
}

#[test]
fn our_config_file_outranks_tcmu_conf_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let nobus = format!("unix:path={}", dir.path().join("none").display());
    // A log directory that cannot be made (below a regular file): a warning, stderr only.
    let afile = dir.path().join("afile");
    std::fs::write(&afile, "").unwrap();
    let mut d = Daemon::start_with(
        &nobus,
        &["--no-dbus"],
        "[daemon]\nlog_level = \"warn\"\n",
        Some(&format!(
            "log_level = 4\nlog_dir = {}/sub\n",
            afile.display()
        )),
    );
    d.wait_log("log level warn");
    d.wait_log("cannot write the log file");
    let log = d.log();
    assert!(
        log.contains("config.toml [daemon] log_level; ") && log.contains("log_level = 4 not used"),
        "{log}"
    );
    assert!(!log.contains("debug logging on"), "{log}");
    d.stop();
}
