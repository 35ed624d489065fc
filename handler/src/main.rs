//! `tcmu-warden`: the daemon binary.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tcmu_warden::daemon::{self, DaemonConfig};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::{config, dbus, logging, tcmu_conf};

/// Userspace handler for LIO TCMU (`user:`) backstores, a drop-in for tcmu-runner.
///
/// Serves the subtypes `file` (`file/<path>`), `rbd` (`rbd/<pool>[/<ns>]/<image>[@<snap>]`)
/// and `glfs` (`glfs/<volume>@<host>[,<host>...]/<path>`), each cfgstring optionally followed
/// by `;option=value...`. With no `--uio` it
/// joins the kernel's TCM-USER netlink group and serves every `tcm-user` device of its
/// subtypes, present at start (after a ring reset) or added later; reconfigurations (size,
/// write cache, cfgstring) and removals are followed. Settings come from the configuration
/// file (see docs/config.md); the options below override it.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The socket the daemon answers `status` and `diagnose` on.
    #[arg(long, value_name = "PATH", default_value = daemon::control::DEFAULT_SOCKET, global = true)]
    control_socket: PathBuf,
    /// Serve exactly this uio device (e.g. /dev/uio0), without listening for device events;
    /// repeat for several. Without it the daemon serves every device of its subtypes, present
    /// or added later.
    #[arg(long, value_name = "DEV")]
    uio: Vec<PathBuf>,
    /// The configuration file [default: /etc/tcmu-warden/config.toml, if present].
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics on this address [config: daemon.metrics_addr, default
    /// 127.0.0.1:9559]; `off` disables the endpoint.
    #[arg(long, value_name = "ADDR|off")]
    metrics_addr: Option<String>,
    /// Worker threads of the pool shared by all devices, for data commands [config:
    /// daemon.workers, default max(4, 2 × cores)].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Most commands in flight per device (contexts are allocated as the queue depth grows,
    /// up to this) [config: daemon.max_inflight, default 256].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65535))]
    max_inflight: Option<u32>,
    /// Seconds a stop waits for commands in flight [config: daemon.stop_timeout, default 10].
    #[arg(long, value_name = "SECS")]
    stop_timeout: Option<u64>,
    /// The initiators' iSCSI replacement_timeout in seconds, checked against each device's
    /// cmd_time_out [config: daemon.replacement_timeout, default 120 as open-iscsi].
    #[arg(long, value_name = "SECS")]
    replacement_timeout: Option<u64>,
    /// Do not ask the kernel to wait for replies to device events (netlink reply mode is on
    /// by default, as with tcmu-runner, so that a device this daemon refuses fails `enable`).
    #[arg(long)]
    no_reply_mode: bool,
    /// Accepted for old command lines; no longer used (no backend I/O runs on the device
    /// thread at any queue depth).
    #[arg(long, hide = true)]
    no_inline: bool,
    /// Run file I/O on the worker threads instead of each device thread's io_uring (the
    /// `[daemon] io_uring` setting; io_uring is used by default where the kernel allows it).
    #[arg(long)]
    no_io_uring: bool,
    /// Microseconds each device thread busy-polls before it sleeps (0..=1000; the
    /// `[daemon] busy_poll_us` setting, default 0: off).
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(0..=1000))]
    busy_poll_us: Option<u32>,
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
    /// Debug logging (same as tcmu-runner's -d; RUST_LOG overrides) [config:
    /// daemon.log_level; tcmu.conf: log_level].
    #[arg(short = 'd', long)]
    debug: bool,
    /// Also write the log to DIR/tcmu-warden.log (tcmu-runner's -l) [tcmu.conf: log_dir;
    /// default: no log file, stderr/the journal only].
    #[arg(short = 'l', long, value_name = "DIR")]
    tcmu_log_dir: Option<PathBuf>,
    /// tcmu-runner's configuration file, read if present and followed while running
    /// (log_level, log_dir).
    #[arg(long, value_name = "FILE", default_value = tcmu_warden::tcmu_conf::DEFAULT_PATH)]
    tcmu_conf: PathBuf,
    /// Do not offer the DBus service org.kernel.TCMUService1 on the system bus (targetcli
    /// then lists no user: backstores).
    #[arg(long)]
    no_dbus: bool,
}

/// Without a subcommand, tcmu-warden runs the daemon.
#[derive(clap::Subcommand, Debug, Clone, Copy)]
enum Cmd {
    /// Ask the running daemon for a one-line verdict per device.
    Status,
    /// Ask the running daemon to explain each device: in-flight commands and the oldest one's
    /// age, timeout tiers and their verdict, ring use, counters and the latest outliers.
    Diagnose,
}

/// Block the signals `daemon::run` takes from its signalfd, in this (the main) thread, so
/// every thread started from now on inherits the mask.
fn block_stop_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(cmd) = cli.command {
        let req = match cmd {
            Cmd::Status => "status",
            Cmd::Diagnose => "diagnose",
        };
        return match daemon::control::ask(&cli.control_socket, req) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "tcmu-warden: cannot reach the daemon at {}: {e} (is tcmu-warden running?)",
                    cli.control_socket.display()
                );
                std::process::ExitCode::FAILURE
            }
        };
    }
    let file = match config::load_from(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tcmu-warden: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let d = &file.daemon;
    // The threads started below (tcmu.conf, DBus) must not take the stop signals, which
    // `daemon::run` reads from a signalfd: block them before any thread exists.
    if let Err(e) = block_stop_signals() {
        eprintln!("tcmu-warden: blocking signals: {e}");
        return std::process::ExitCode::FAILURE;
    }
    // A panic on any thread ends the process (systemd restarts a clean one).
    tcmu_warden::panic_policy::install();
    // Log level: RUST_LOG, -d, our config file's log_level, tcmu.conf's, `info`.
    let overrides = tcmu_conf::Overrides {
        env: std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()),
        debug: cli.debug,
        ours: {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| config::DEFAULT_PATH.into());
            tcmu_conf::our_log_level(&path).map(|l| (l, path))
        },
        log_dir: cli.tcmu_log_dir.clone(),
    };
    let logging = logging::init(overrides.env.as_deref().unwrap_or(&d.log_level));
    // A SIGHUP reload may change config.toml's log_level, unless RUST_LOG or -d fixed it.
    let log_level: Option<daemon::LogLevelSetter> =
        (overrides.env.is_none() && !cli.debug).then(|| {
            let l = std::sync::Arc::clone(&logging);
            std::sync::Arc::new(move |level: &str| {
                l.set_filter(level, "config.toml [daemon] log_level, reloaded");
                Ok(())
            }) as daemon::LogLevelSetter
        });
    tcmu_conf::watch(logging, overrides, cli.tcmu_conf.clone());
    // The bus name is taken before any device is opened: DBus activation (targetcli) never
    // waits for a slow backend.
    let _dbus = (!cli.no_dbus).then(|| dbus::start(&dbus::Options::default()));
    let metrics_addr = match cli.metrics_addr.as_deref() {
        None => Some(d.metrics_addr),
        Some("off") => None,
        Some(a) => {
            match a.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("tcmu-warden: --metrics-addr {a:?}: {e} (expected e.g. 127.0.0.1:9559, or off)");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    };
    // One pool of workers for every device; each device may use `share` of its threads.
    let workers = usize::from(cli.workers.unwrap_or(d.workers));
    let share = match d.device_workers {
        0 => tcmu_warden::config::device_workers_for(workers),
        n => usize::from(n),
    };
    let pool = tcmu_warden::device::workers::WorkerPool::new(
        "tcmu-w",
        workers,
        DeviceConfig::default().scratch_bytes,
    );
    let cfg = DaemonConfig {
        uio: cli.uio,
        configfs_root: cli.configfs,
        sysfs_uio: cli.sysfs_uio,
        device: DeviceConfig {
            workers: share,
            pool: Some(pool),
            max_inflight: cli.max_inflight.unwrap_or(d.max_inflight) as usize,
            stop_deadline: cli.stop_timeout.map_or(d.stop_timeout, Duration::from_secs),
            inline_qd1: d.inline_qd1 && !cli.no_inline,
            io_uring: d.io_uring && !cli.no_io_uring,
            busy_poll: Duration::from_micros(u64::from(cli.busy_poll_us.unwrap_or(d.busy_poll_us))),
            ..DeviceConfig::default()
        },
        reclaim_safety: d.mlock && !cli.no_mlock,
        reply_mode: d.reply_mode && !cli.no_reply_mode,
        replacement_timeout: cli
            .replacement_timeout
            .map_or(d.replacement_timeout, Duration::from_secs),
        metrics_addr,
        config_path: cli.config,
        file,
        metrics: None,
        control_socket: Some(cli.control_socket),
        log_level,
        reconfig_timeout: tcmu_warden::daemon::RECONFIG_TIMEOUT,
        write_cache: None,
    };
    let code = match daemon::run(&cfg) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tcmu-warden: {e}");
            std::process::ExitCode::FAILURE
        }
    };
    logging::finish();
    code
}
