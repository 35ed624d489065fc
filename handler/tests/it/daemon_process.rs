//! The daemon binary as a process: reclaim safety (memory locked), systemd notification,
//! prompt and clean exit on SIGTERM, clear errors for a device it cannot serve.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tcmu-warden");

fn vm_lck_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmLck:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn locks_memory_notifies_systemd_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let empty_sysfs = dir.path().join("uio");
    std::fs::create_dir(&empty_sysfs).unwrap();
    let ctl = dir.path().join("ctl.sock");
    let mut child = Command::new(BIN)
        .arg("--sysfs-uio")
        .arg(&empty_sysfs)
        .arg("--control-socket")
        .arg(&ctl)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("READY=1"), "{msg}");

    // `status` asks the running daemon over its control socket.
    let out = Command::new(BIN)
        .arg("status")
        .arg("--control-socket")
        .arg(&ctl)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("0 device(s)"),
        "status: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let locked = vm_lck_kb(child.id()).expect("VmLck in /proc/<pid>/status");
    if is_root() {
        assert!(
            locked > 0,
            "mlockall at start: VmLck should be > 0 kB, is {locked}"
        );
    } else {
        eprintln!("not root: VmLck={locked} kB not asserted (mlockall needs CAP_IPC_LOCK or a memlock limit)");
    }

    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill with a valid pid and signal.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(r, 0);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status:?}");
    let mut seen = Vec::new();
    while let Ok(n) = {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        sock.recv(&mut buf)
    } {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        seen.iter().any(|m| m == "STOPPING=1"),
        "STOPPING=1 sent: {seen:?}"
    );
}

#[test]
fn a_device_that_cannot_be_served_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--no-mlock")
        .arg("--uio")
        .arg(dir.path().join("uio9"))
        .arg("--sysfs-uio")
        .arg(dir.path())
        .arg("--control-socket")
        .arg(dir.path().join("ctl.sock"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("uio9"), "the message names the device: {err}");
    assert!(
        err.contains("none of the requested devices could be served"),
        "{err}"
    );
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < limit, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_metrics_with_no_device() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let empty_sysfs = dir.path().join("uio");
    std::fs::create_dir(&empty_sysfs).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args([
            "--no-mlock",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--sysfs-uio",
        ])
        .arg(&empty_sysfs)
        .arg("--control-socket")
        .arg(dir.path().join("ctl.sock"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let body = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            break b;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no metrics endpoint on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("tcmu_warden_devices 0"), "{body}");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill with a valid pid and signal.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(r, 0);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn a_bad_configuration_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nworkers = 2\n\n[defaults]\nio_timout = \"5s\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains("line 5") && err.contains("io_timout"),
        "the message names the line and the key: {err}"
    );
}

#[test]
fn status_without_a_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("diagnose")
        .arg("--control-socket")
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the daemon") && err.contains("is tcmu-warden running?"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_the_configuration_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, "[daemon]\nlog_level = \"info\"\n").unwrap();
    let empty_sysfs = dir.path().join("uio");
    std::fs::create_dir(&empty_sysfs).unwrap();
    let ctl = dir.path().join("ctl.sock");
    let mut child = Command::new(BIN)
        .args(["--no-mlock", "--metrics-addr", "off", "-c"])
        .arg(&conf)
        .arg("--sysfs-uio")
        .arg(&empty_sysfs)
        .arg("--control-socket")
        .arg(&ctl)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // Signal, then give the daemon time to read the file before the test rewrites it.
    let hup = |what: &str| {
        // SAFETY: kill with a valid pid and signal.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "{what}");
        std::thread::sleep(Duration::from_millis(500));
    };
    // Wait until it answers on its control socket (it is up).
    let t = Instant::now();
    while !ctl.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "daemon not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(
        &conf,
        "[daemon]\nlog_level = \"debug\"\ndevice_workers = 2\nreply_mode = false\n",
    )
    .unwrap();
    hup("good file");
    std::fs::write(&conf, "[daemon]\nworkers = 0\n").unwrap();
    hup("bad file");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    for want in [
        "log_level: info -> debug, applies now",
        "device_workers: 0 -> 2, applies to devices opened from now on",
        "reply_mode: true -> false, applies only after a restart",
        "SIGHUP: configuration reloaded",
        "SIGHUP: the configuration was NOT reloaded, the one in force stays",
        "line 2",
    ] {
        assert!(err.contains(want), "{want:?} missing from the log:\n{err}");
    }
    // The new log level is in force: debug lines appear after the reload.
    let after = &err[err.find("log_level: info -> debug").unwrap()..];
    assert!(
        after.contains("DEBUG"),
        "no DEBUG line after the reload:\n{after}"
    );
}
