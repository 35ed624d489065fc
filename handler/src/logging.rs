//! The process's log: stderr (the journal under systemd) and optionally a file, with a
//! filter that changes at run time (tcmu.conf's `log_level`, see [`crate::tcmu_conf`]).
//!
//! Logging never blocks the thread that logs: each output is written by a thread of its own
//! (`tracing-appender`'s non-blocking writer; for journald, [`crate::journal`]) from a bounded
//! buffer of [`BUFFER_LINES`] lines.
//! When the output does not keep up (a stalled journald, a slow log disk), new lines are
//! dropped, not waited for, and counted: [`dropped_lines`], exported as
//! `tcmu_warden_log_lines_dropped_total` and shown by `diagnose`. A device thread logging
//! during an incident thus never waits on the log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, Layer};
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// The log file's name inside the log directory.
pub const FILE_NAME: &str = "tcmu-warden.log";

/// Lines each output buffers while its writer catches up; more are dropped and counted.
pub const BUFFER_LINES: usize = 16_384;

/// The dropped-line counters of every non-blocking output made by [`non_blocking`].
static DROPPED: OnceLock<parking_lot::Mutex<Vec<ErrorCounter>>> = OnceLock::new();

/// The guards of the process's outputs; [`finish`] drops them.
static GUARDS: parking_lot::Mutex<Vec<WorkerGuard>> = parking_lot::Mutex::new(Vec::new());

/// Write out what the outputs still buffer (bounded by `tracing-appender`: about 1 s per
/// output). Call once, as the process exits; later lines are lost.
pub fn finish() {
    drop(std::mem::take(&mut *GUARDS.lock()));
}

/// Lines dropped so far because an output did not keep up (journald's included).
#[must_use]
pub fn dropped_lines() -> u64 {
    let writers = DROPPED.get().map_or(0, |v| {
        v.lock()
            .iter()
            .map(|c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
            .sum()
    });
    writers.saturating_add(crate::journal::dropped())
}

/// A non-blocking, lossy writer over `w`, written by a thread of its own from a buffer of
/// [`BUFFER_LINES`] lines; its drops count in [`dropped_lines`]. Keep the guard for as long
/// as the writer is used (dropping it flushes what is buffered).
pub fn non_blocking<W: Write + Send + 'static>(w: W) -> (NonBlocking, WorkerGuard) {
    let (nb, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFER_LINES)
        .thread_name("tcmu-log")
        .finish(w);
    DROPPED
        .get_or_init(Default::default)
        .lock()
        .push(nb.error_counter());
    (nb, guard)
}

/// Handle on the installed logger: change the filter and the log file while running.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    file: Arc<parking_lot::Mutex<Option<File>>>,
    /// A log file is open: only then does the file output format events (with none, each
    /// line was formatted and handed to the file's writer thread only to be discarded).
    file_on: Arc<AtomicBool>,
    state: parking_lot::Mutex<State>,
}

struct State {
    filter: String,
    /// The filter's source has been logged (the first `set_filter` always logs).
    filter_told: bool,
    dir: Option<PathBuf>,
    dir_told: bool,
}

/// Install the global logger with filter `initial` (falls back to `info` if it does not
/// parse). Call once, before anything logs.
#[must_use]
pub fn init(initial: &str) -> Arc<Logging> {
    let (filter, handle) =
        reload::Layer::new(parse_filter(initial).unwrap_or_else(|_| EnvFilter::new("info")));
    let file = Arc::new(parking_lot::Mutex::new(None));
    let (file_writer, file_guard) = non_blocking(FileWriter(Arc::clone(&file)));
    let (stderr_writer, stderr_guard) = non_blocking(std::io::stderr());
    let file_on = Arc::new(AtomicBool::new(false));
    let on = Arc::clone(&file_on);
    let to_file = fmt::layer()
        .with_ansi(false)
        .with_writer(file_writer)
        .with_filter(filter::filter_fn(move |_| on.load(Ordering::Relaxed)));
    // Under systemd, straight to the journal (fields kept); otherwise text on stderr.
    let to_journal = journald();
    let to_stderr = to_journal.is_none().then(|| {
        fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(stderr_writer)
    });
    *GUARDS.lock() = vec![stderr_guard, file_guard];
    tracing_subscriber::registry()
        .with(filter)
        .with(to_stderr)
        .with(to_journal)
        .with(to_file)
        .init();
    Arc::new(Logging {
        filter: handle,
        file,
        file_on,
        state: parking_lot::Mutex::new(State {
            filter: initial.to_string(),
            filter_told: false,
            dir: None,
            dir_told: false,
        }),
    })
}

/// A journald sink when stderr is the journal: systemd sets `JOURNAL_STREAM` to the device and
/// inode of the stream it connected (systemd.exec(5)); a child whose stderr was redirected
/// elsewhere inherits the variable but not the stream, hence the comparison. Each event goes
/// out with its level as `PRIORITY` and its fields (`device`, `cmd_id`, stage times ...) as
/// journal fields of the same name in capitals (`DEVICE`, `CMD_ID`), see README "Install on a
/// gateway"; never waiting for journald ([`crate::journal`]).
fn journald() -> Option<crate::journal::JournalLayer> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let stream = std::env::var("JOURNAL_STREAM").ok()?;
    let (dev, ino) = stream.split_once(':')?;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = File::from(fd).metadata().ok()?;
    if meta.dev().to_string() != dev || meta.ino().to_string() != ino {
        return None;
    }
    crate::journal::JournalLayer::new(
        Path::new(crate::journal::SOCKET),
        "tcmu-warden",
        BUFFER_LINES,
    )
    .ok()
}

/// Parse a log filter (`info`, `tcmu_warden=debug`, ...). Field values in a directive
/// (`[span{field=value}]`) match as plain text, never as regular expressions: building the
/// automaton of a crafted pattern took the config fuzz target more than 20 s of CPU, and a
/// reload runs on the main loop.
///
/// # Errors
/// The filter's syntax error, with the text.
pub fn parse_filter(f: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(f)
        .map_err(|e| format!("bad log filter {f:?}: {e}"))
}

impl Logging {
    /// Use `filter` from now on; `source` says where it came from (logged). No-op if unchanged.
    pub fn set_filter(&self, filter: &str, source: &str) {
        let mut st = self.state.lock();
        if st.filter_told && st.filter == filter {
            return;
        }
        match parse_filter(filter) {
            Ok(f) => {
                if let Err(e) = self.filter.reload(f) {
                    tracing::warn!("cannot change the log level: {e}");
                    return;
                }
                st.filter = filter.to_string();
                st.filter_told = true;
                drop(st);
                // Where the level came from is worth seeing even at a quieter level.
                if tracing::enabled!(tracing::Level::INFO) {
                    tracing::info!("log level {filter} (from {source})");
                } else {
                    tracing::warn!("log level {filter} (from {source})");
                }
                tracing::debug!("debug logging on");
            }
            Err(e) => tracing::warn!("{e} (from {source}); keeping {}", st.filter),
        }
    }

    /// Also write the log to `dir/tcmu-warden.log` (None: no file); `source` is logged.
    /// A directory that cannot be written is a warning: the log still goes to stderr.
    pub fn set_log_dir(&self, dir: Option<&Path>, source: &str) {
        let mut st = self.state.lock();
        if st.dir_told && st.dir.as_deref() == dir {
            return;
        }
        st.dir = dir.map(Path::to_path_buf);
        st.dir_told = true;
        drop(st);
        let Some(dir) = dir else {
            *self.file.lock() = None;
            self.file_on.store(false, Ordering::Relaxed);
            tracing::info!("no log file ({source})");
            return;
        };
        let path = dir.join(FILE_NAME);
        let opened = std::fs::create_dir_all(dir)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path));
        match opened {
            Ok(f) => {
                *self.file.lock() = Some(f);
                self.file_on.store(true, Ordering::Relaxed);
                tracing::info!(path = %path.display(), "logging to {} (from {source})", path.display());
            }
            Err(e) => {
                *self.file.lock() = None;
                self.file_on.store(false, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), "cannot write the log file {}: {e} (from {source}); logging to stderr only", path.display());
            }
        }
    }

    /// The filter in use.
    #[must_use]
    pub fn filter(&self) -> String {
        self.state.lock().filter.clone()
    }
}

/// Writes to the log file if there is one, else discards (on the file output's own thread).
struct FileWriter(Arc<parking_lot::Mutex<Option<File>>>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock().as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_filter;
    use std::time::{Duration, Instant};

    /// Found by the config fuzz target: this filter's field pattern, read as a regular
    /// expression, took more than 20 s to build; as plain text it is read at once.
    #[test]
    fn a_field_value_is_plain_text_so_a_crafted_one_parses_at_once() {
        let crafted = "inwwgrkerszifo\t[_level ={#ijjjjjjjj=jjjjjjjjjjjjj+++++++++++++++++++........................................................................................+++++++++++++++++++++++$+++++++;++++++++++++++;+++jjjjjjjjjjjjjjjjjjotn=i;4}jl= =.ier_``lig!*%replac;ce";
        let t = Instant::now();
        let _ = parse_filter(crafted);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert!(parse_filter("info,tcmu_warden=debug").is_ok());
        assert!(parse_filter("[open{device=a+b}]=debug").is_ok());
        assert!(parse_filter("tcmu_warden=loud").is_err());
    }
}
