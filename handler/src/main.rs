//! `tcmu-warden`: the daemon binary.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use tcmu_warden::daemon::{self, DaemonConfig};
use tcmu_warden::device::DeviceConfig;

/// Userspace handler for LIO TCMU (`user:`) backstores, a drop-in for tcmu-runner.
///
/// Serves the `file` subtype (cfgstring `file/<path>`). With no `--uio` it joins the kernel's
/// TCM-USER netlink group and serves every `tcm-user` device of its subtypes, present at
/// start (after a ring reset) or added later; reconfigurations (size, write cache,
/// cfgstring) and removals are followed.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Serve exactly this uio device (e.g. /dev/uio0), without listening for device events;
    /// repeat for several. Without it the daemon serves every device of its subtypes, present
    /// or added later.
    #[arg(long, value_name = "DEV")]
    uio: Vec<PathBuf>,
    /// Worker threads per device for data commands.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Most commands in flight per device (contexts are preallocated).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65535))]
    max_inflight: u32,
    /// Seconds a stop waits for commands in flight.
    #[arg(long, default_value_t = 10)]
    stop_timeout: u64,
    /// The initiators' iSCSI replacement_timeout in seconds (open-iscsi's default is 120),
    /// checked against each device's cmd_time_out.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    replacement_timeout: u64,
    /// Do not ask the kernel to wait for replies to device events (netlink reply mode is on
    /// by default, as with tcmu-runner, so that a device this daemon refuses fails `enable`).
    #[arg(long)]
    no_reply_mode: bool,
    /// Always hand READ and WRITE to the worker threads, even at queue depth 1 (by default a
    /// lone command runs on the device thread, saving two thread hand-offs).
    #[arg(long)]
    no_inline: bool,
    /// Do not mlockall or set PR_SET_IO_FLUSHER (both on by default: they keep memory
    /// reclaim from deadlocking against the I/O this daemon serves).
    #[arg(long)]
    no_mlock: bool,
    /// Root of the target core in configfs.
    #[arg(long, default_value = tcmu_warden::configfs::CORE_ROOT, value_name = "DIR")]
    configfs: PathBuf,
    /// Where the uio class lives in sysfs (for tests).
    #[arg(
        long,
        default_value = "/sys/class/uio",
        value_name = "DIR",
        hide = true
    )]
    sysfs_uio: PathBuf,
    /// Debug logging (same as tcmu-runner's -d; RUST_LOG overrides).
    #[arg(short = 'd', long)]
    debug: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default = if cli.debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg = DaemonConfig {
        uio: cli.uio,
        configfs_root: cli.configfs,
        sysfs_uio: cli.sysfs_uio,
        device: DeviceConfig {
            workers: usize::from(cli.workers),
            max_inflight: cli.max_inflight as usize,
            stop_deadline: Duration::from_secs(cli.stop_timeout),
            inline_qd1: !cli.no_inline,
            ..DeviceConfig::default()
        },
        reclaim_safety: !cli.no_mlock,
        reply_mode: !cli.no_reply_mode,
        replacement_timeout: Duration::from_secs(cli.replacement_timeout),
    };
    match daemon::run(&cfg) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tcmu-warden: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
