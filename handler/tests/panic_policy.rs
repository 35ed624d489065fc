//! The panic policy: a panic on any thread ends the whole process (so systemd restarts a
//! clean one that resets every ring), instead of leaving a process whose device thread is
//! gone while the main loop still pings the watchdog.
//!
//! The test runs itself again as a child that installs the policy and panics on a side
//! thread while its main thread goes on, as the daemon's main loop would.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "TCMU_WARDEN_PANIC_POLICY_CHILD";

#[test]
fn a_panic_on_a_side_thread_aborts_the_process() {
    if std::env::var_os(CHILD).is_some() {
        tcmu_warden::panic_policy::install();
        let _t = std::thread::Builder::new()
            .name("tcmu-d/injected".into())
            .spawn(|| panic!("injected panic"))
            .unwrap();
        // The main loop goes on; only the policy can end the process.
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let t = Instant::now();
    let out = Command::new(exe)
        .args([
            "--exact",
            "a_panic_on_a_side_thread_aborts_the_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("child ended by {:?} after {took:?}", out.status);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "the process aborts: {:?}\n{err}",
        out.status
    );
    assert!(took < Duration::from_secs(10), "ended after {took:?}");
    assert!(
        err.contains("injected panic") && err.contains("tcmu-d/injected"),
        "the panic and the thread are reported: {err}"
    );
}
