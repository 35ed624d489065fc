//! What a panic does: it ends the process.
//!
//! A panic on a device thread would otherwise leave that device's commands uncompleted while
//! the main loop goes on pinging the systemd watchdog, and a panic in a worker in the middle
//! of a multi-step command would leave its LBA fence in place for ever. Rather than try to
//! repair a half-updated device in place, the process aborts: systemd restarts a clean one
//! (`Restart=on-failure`), which follows the crash plan (netlink reset, every ring reset with
//! BUSY, so initiators retry) and serves every device again. See docs/DESIGN.md, "Panics".
//!
//! The release profile also builds with `panic = "abort"`; the hook makes the policy hold in
//! every build and writes the reason to stderr synchronously first (the logger is
//! non-blocking and would lose the last lines of a dying process).

use std::io::Write;

/// Install the policy: print the panic (message, place, thread), then abort.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        let _ = writeln!(
            std::io::stderr(),
            "tcmu-warden: thread {:?} panicked; aborting so that a clean process restarts and resets every ring",
            thread.name().unwrap_or("unnamed")
        );
        std::process::abort();
    }));
}
