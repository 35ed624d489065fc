//! The shipped systemd unit (`systemd/tcmu-warden.service`): the directives the daemon and the
//! kernel rely on are present, and `systemd-analyze verify` accepts it with its ExecStart
//! pointed at the binary this build produced. `systemd-analyze` comes with Debian's `systemd`
//! package; without it the verification part is skipped (the directive checks still run).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT_NAME: &str = "tcmu-warden.service";
const INSTALLED_EXEC: &str = "/usr/sbin/tcmu-warden";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn unit_text() -> String {
    std::fs::read_to_string(repo_file("systemd/tcmu-warden.service"))
        .expect("systemd/tcmu-warden.service")
}

/// `(section, key, value)` of every assignment, comments and blank lines dropped.
fn directives(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment: {line:?}"));
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

/// Every value of `key` in `section` (a key may repeat).
fn values(d: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    d.iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

#[track_caller]
fn one(d: &[(String, String, String)], section: &str, key: &str) -> String {
    let v = values(d, section, key);
    assert_eq!(
        v.len(),
        1,
        "[{section}] {key}= set exactly once, found {v:?}"
    );
    v[0].clone()
}

/// Space-separated words of every `key=` line of a section.
fn words(d: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    values(d, section, key)
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Seconds of a systemd time span as written in this unit ("30s", "30", "1min").
fn seconds(v: &str) -> u64 {
    if let Some(m) = v.strip_suffix("min") {
        return m.parse::<u64>().expect("minutes") * 60;
    }
    v.strip_suffix('s')
        .unwrap_or(v)
        .parse()
        .unwrap_or_else(|_| panic!("time span {v:?}"))
}

#[test]
fn unit_has_the_directives_the_daemon_and_kernel_need() {
    let d = directives(&unit_text());
    // Readiness and supervision (the daemon speaks sd_notify: READY=1, WATCHDOG=1, STOPPING=1).
    assert_eq!(one(&d, "Service", "Type"), "notify");
    assert_eq!(one(&d, "Service", "NotifyAccess"), "main");
    assert!(
        seconds(&one(&d, "Service", "WatchdogSec")) >= 10,
        "a watchdog the daemon can keep up with"
    );
    assert_eq!(one(&d, "Service", "Restart"), "on-failure");
    assert_eq!(one(&d, "Service", "ExecStart"), INSTALLED_EXEC);
    // The stop must outlast the daemon's own deadline for commands in flight (10 s default).
    assert!(
        seconds(&one(&d, "Service", "TimeoutStopSec")) > 10,
        "TimeoutStopSec above --stop-timeout"
    );
    // mlockall(MCL_FUTURE) of a daemon with per-device buffers.
    assert_eq!(one(&d, "Service", "LimitMEMLOCK"), "infinity");
    assert_eq!(one(&d, "Service", "LimitNOFILE"), "65536");
    // Never next to tcmu-runner; up before the target configuration is restored.
    assert!(words(&d, "Unit", "Conflicts").contains(&"tcmu-runner.service".to_string()));
    let before = words(&d, "Unit", "Before");
    for u in ["target.service", "rtslib-fb-targetctl.service"] {
        assert!(before.contains(&u.to_string()), "Before={u}: {before:?}");
    }
    // Hardening that still lets it work: configfs writable, uio devices, netlink.
    assert_eq!(one(&d, "Service", "ProtectSystem"), "strict");
    assert_eq!(one(&d, "Service", "NoNewPrivileges"), "yes");
    assert!(
        words(&d, "Service", "ReadWritePaths").contains(&"/sys/kernel/config".to_string()),
        "configfs writable"
    );
    assert_eq!(
        values(&d, "Service", "DeviceAllow"),
        vec!["char-uio rw".to_string()]
    );
    let families = words(&d, "Service", "RestrictAddressFamilies");
    assert!(
        families.contains(&"AF_NETLINK".to_string()) && families.contains(&"AF_UNIX".to_string()),
        "{families:?}"
    );
    assert!(
        values(&d, "Service", "PrivateNetwork")
            .iter()
            .all(|v| v == "no"),
        "the TCM-USER netlink family lives in the host netns"
    );
    assert!(
        values(&d, "Service", "PrivateUsers")
            .iter()
            .all(|v| v == "no"),
        "CAP_NET_ADMIN must be real"
    );
    let caps = words(&d, "Service", "CapabilityBoundingSet");
    for c in ["CAP_NET_ADMIN", "CAP_IPC_LOCK", "CAP_SYS_RESOURCE"] {
        assert!(
            caps.contains(&c.to_string()),
            "{c} in the bounding set: {caps:?}"
        );
    }
    assert_eq!(
        words(&d, "Install", "WantedBy"),
        vec!["multi-user.target".to_string()]
    );
    // The DBus name targetcli asks for, and the activation file that starts this unit.
    assert_eq!(one(&d, "Service", "BusName"), "org.kernel.TCMUService1");
    let act = std::fs::read_to_string(repo_file("systemd/org.kernel.TCMUService1.service"))
        .expect("DBus activation file");
    let a = directives(&act);
    assert_eq!(one(&a, "D-BUS Service", "Name"), "org.kernel.TCMUService1");
    assert_eq!(one(&a, "D-BUS Service", "SystemdService"), UNIT_NAME);
    assert_eq!(one(&a, "D-BUS Service", "User"), "root");
    assert_eq!(one(&a, "D-BUS Service", "Exec"), INSTALLED_EXEC);
    // The policy: only root owns the name and talks to it.
    let policy = std::fs::read_to_string(repo_file("systemd/org.kernel.TCMUService1.conf"))
        .expect("DBus policy file");
    for rule in [
        r#"<policy user="root">"#,
        r#"<allow own="org.kernel.TCMUService1"/>"#,
        r#"<deny send_destination="org.kernel.TCMUService1"/>"#,
    ] {
        assert!(policy.contains(rule), "{rule} in the DBus policy");
    }
    // The module is loaded at boot so the netlink family exists when the daemon starts.
    let modules = std::fs::read_to_string(repo_file("systemd/modules-load.d/tcmu-warden.conf"))
        .expect("modules-load.d file");
    assert!(modules.lines().any(|l| l.trim() == "target_core_user"));
}

fn have_systemd_analyze() -> bool {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) => o.status.success(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("running systemd-analyze: {e}"),
    }
}

/// Write `text` as `tcmu-warden.service` in a temp dir, ExecStart pointed at the built binary.
fn staged_unit(text: &str) -> (tempfile::TempDir, PathBuf) {
    let exe = env!("CARGO_BIN_EXE_tcmu-warden");
    assert!(text.contains(INSTALLED_EXEC), "unit runs {INSTALLED_EXEC}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(UNIT_NAME);
    std::fs::write(&path, text.replace(INSTALLED_EXEC, exe)).expect("write unit");
    (dir, path)
}

/// `systemd-analyze verify`: Ok, or every complaint about this unit. Unknown keys and bad
/// values are only warnings (exit status 0), so the output counts as much as the status.
fn verify(text: &str) -> Result<(), String> {
    let (dir, path) = staged_unit(text);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .current_dir(dir.path())
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let about_us: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(UNIT_NAME) || l.contains(&*path.to_string_lossy()))
        .collect();
    if out.status.success() && about_us.is_empty() {
        Ok(())
    } else {
        Err(format!("status {}: {text}", out.status))
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !have_systemd_analyze() {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`); the unit was not verified");
        return;
    }
    let text = unit_text();
    if let Err(e) = verify(&text) {
        panic!("systemd-analyze verify rejected systemd/{UNIT_NAME}:\n{e}");
    }
    // The check is not a rubber stamp: a misspelt key and a missing binary are caught.
    let typo = text.replace("NotifyAccess=main", "NotifyAcess=main");
    assert!(verify(&typo).is_err(), "an unknown key must be reported");
    let (dir, path) = staged_unit(&text);
    std::fs::write(
        &path,
        text.replace(INSTALLED_EXEC, "/nonexistent/tcmu-warden"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a missing ExecStart binary must fail verification"
    );
}

#[test]
fn hardening_keeps_the_exposure_level_low() {
    if !have_systemd_analyze() {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    }
    let (dir, path) = staged_unit(&unit_text());
    // --offline needs systemd >= 250 (bookworm has 252); older versions cannot score a file.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=30", "--no-pager"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze security");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("unrecognized option") || text.contains("Unknown option") {
        eprintln!("SKIPPED: this systemd-analyze cannot score a unit file offline");
        return;
    }
    assert!(
        out.status.success(),
        "exposure above 3.0 (systemd-analyze security):\n{text}"
    );
}

/// What keeps the sandbox from stopping the daemon's own work, as a list of problems (empty:
/// none). Each line names the feature the unit would break; `sandbox_rules_catch_regressions`
/// shows that each rule fires.
fn sandbox_problems(text: &str) -> Vec<String> {
    let d = directives(text);
    let mut p = Vec::new();
    let families = words(&d, "Service", "RestrictAddressFamilies");
    for (f, why) in [
        ("AF_NETLINK", "TCM-USER netlink"),
        ("AF_UNIX", "control socket, system bus, sd_notify"),
        ("AF_INET", "librados/gfapi and /metrics on 127.0.0.1"),
        ("AF_INET6", "librados/gfapi on IPv6 clusters"),
    ] {
        if !families.iter().any(|x| x == f) {
            p.push(format!("RestrictAddressFamilies lacks {f} ({why})"));
        }
    }
    let deny = words(&d, "Service", "IPAddressDeny");
    let allow = words(&d, "Service", "IPAddressAllow");
    if deny.iter().any(|w| w == "any")
        && !allow
            .iter()
            .any(|w| w == "localhost" || w == "127.0.0.1" || w == "127.0.0.0/8")
    {
        p.push("IPAddressDeny=any without localhost allowed: /metrics unreachable".into());
    }
    // The control socket's directory must be created for the daemon (ProtectSystem=strict
    // leaves /run read-only).
    let sock_dir = Path::new(tcmu_warden::daemon::control::DEFAULT_SOCKET)
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .expect("socket directory");
    if !words(&d, "Service", "RuntimeDirectory")
        .iter()
        .any(|w| w == sock_dir)
    {
        p.push(format!(
            "no RuntimeDirectory={sock_dir}: `tcmu-warden status` has no socket"
        ));
    }
    // ProtectKernelTunables makes /sys read-only; the crash plan writes the module's
    // parameters (block_netlink, reset_netlink) and reply mode depends on it.
    if values(&d, "Service", "ProtectKernelTunables")
        .iter()
        .any(|v| v == "yes")
    {
        let rw = words(&d, "Service", "ReadWritePaths");
        let params = "/sys/module/target_core_user/parameters";
        if !rw
            .iter()
            .any(|w| w.trim_start_matches(['-', '+']) == params)
        {
            p.push(format!(
                "ProtectKernelTunables=yes without ReadWritePaths={params}: no crash plan"
            ));
        }
        if !rw.iter().any(|w| w == "/sys/kernel/config") {
            p.push("configfs is read-only".into());
        }
    }
    p
}

#[test]
fn the_sandbox_allows_what_the_daemon_does() {
    let problems = sandbox_problems(&unit_text());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn sandbox_rules_catch_regressions() {
    let text = unit_text();
    let family_line = text
        .lines()
        .find(|l| l.starts_with("RestrictAddressFamilies="))
        .expect("RestrictAddressFamilies line")
        .to_string();
    let cases = [
        (
            text.replace(&family_line, "RestrictAddressFamilies=AF_NETLINK AF_UNIX"),
            "AF_INET",
        ),
        (
            text.replace("[Service]\n", "[Service]\nIPAddressDeny=any\n"),
            "IPAddressDeny",
        ),
        (
            text.replace("RuntimeDirectory=tcmu-warden\n", ""),
            "RuntimeDirectory",
        ),
        (
            text.replace(
                "ReadWritePaths=-/sys/module/target_core_user/parameters\n",
                "",
            ),
            "crash plan",
        ),
    ];
    for (mutated, what) in cases {
        assert_ne!(mutated, text, "the mutation for {what} changed nothing");
        let problems = sandbox_problems(&mutated);
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "removing {what} went unnoticed: {problems:?}"
        );
    }
}

/// Every system call group `systemd-analyze syscall-filter` knows, members as listed (names
/// and nested `@group`s).
fn syscall_groups() -> std::collections::HashMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager"])
        .output()
        .expect("run systemd-analyze syscall-filter");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter failed"
    );
    let mut groups = std::collections::HashMap::new();
    let mut cur: Option<String> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('@') {
            cur = Some(line.trim().to_string());
            groups.insert(line.trim().to_string(), Vec::new());
        } else if let Some(g) = &cur {
            let w = line.trim();
            if !w.is_empty() && !w.starts_with('#') {
                groups.get_mut(g).expect("group").push(w.to_string());
            }
        }
    }
    groups
}

fn expand(
    groups: &std::collections::HashMap<String, Vec<String>>,
    name: &str,
    out: &mut std::collections::BTreeSet<String>,
) {
    match groups.get(name) {
        Some(members) => members.iter().for_each(|m| expand(groups, m, out)),
        None if name.starts_with('@') => panic!("unknown system call group {name}"),
        None => {
            out.insert(name.to_string());
        }
    }
}

/// The system calls `SystemCallFilter=` lines allow, systemd's way: the first line without `~`
/// is the allow list, later plain lines add to it, `~` lines take away.
fn allowed_syscalls(text: &str) -> std::collections::BTreeSet<String> {
    let groups = syscall_groups();
    let d = directives(text);
    let mut allowed = std::collections::BTreeSet::new();
    for v in values(&d, "Service", "SystemCallFilter") {
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        let mut set = std::collections::BTreeSet::new();
        list.split_whitespace()
            .for_each(|w| expand(&groups, w, &mut set));
        if deny {
            allowed.retain(|s| !set.contains(s));
        } else {
            allowed.extend(set);
        }
    }
    allowed
}

#[test]
fn system_call_filter_allows_the_start_up_calls() {
    if !have_systemd_analyze() {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    }
    let text = unit_text();
    let allowed = allowed_syscalls(&text);
    // reclaim_safety (mlockall, prctl PR_SET_IO_FLUSHER), the ring (mmap, uio reads),
    // netlink and sockets, backing files.
    for s in [
        "mlockall",
        "prctl",
        "mmap",
        "munmap",
        "read",
        "write",
        "pread64",
        "pwrite64",
        "fdatasync",
        "fallocate",
        "socket",
        "bind",
        "listen",
        "accept4",
        "sendmsg",
        "recvmsg",
        "epoll_wait",
        "eventfd2",
        "signalfd4",
        "clone3",
        "futex",
        // The device thread's io_uring (file I/O), in @aio.
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "preadv",
        "pwritev2",
    ] {
        assert!(allowed.contains(s), "SystemCallFilter refuses {s}");
    }
    // The model is not vacuous: a filter without @memlock refuses mlockall.
    let strict = text.replace(
        "SystemCallFilter=~@privileged @resources",
        "SystemCallFilter=~@privileged @resources @memlock",
    );
    assert_ne!(strict, text);
    assert!(!allowed_syscalls(&strict).contains("mlockall"));
}
