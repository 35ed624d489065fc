//! What a backend says about itself for `diagnose` (RBD: lock owners, watchers), asked off
//! the main loop.
//!
//! Such queries may wait on the store (an RBD diagnose asks the OSDs, without a timeout unless
//! `osd_op_timeout` is set), so the main loop never makes them: each runs on its own thread,
//! at most one per device at a time, and `diagnose` reports the last answer, saying so when
//! the backend has not answered the current query ("backend not answering").

use crate::device::link::DeviceLink;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The backend facts of one device: the last answer and whether a query is running.
#[derive(Default)]
pub struct BackendFacts {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last answer and when it came.
    last: Option<(Instant, Vec<String>)>,
    /// A query is running since then.
    running_since: Option<Instant>,
}

impl BackendFacts {
    /// Ask the backend again, on a thread of its own, unless a query is still running.
    pub fn refresh(self: &Arc<Self>, link: &Arc<DeviceLink>) {
        let mut st = self.state.lock();
        if st.running_since.is_some() {
            return;
        }
        st.running_since = Some(Instant::now());
        drop(st);
        let (me, link) = (Arc::clone(self), Arc::clone(link));
        let spawned = std::thread::Builder::new()
            .name("tcmu-facts".into())
            .spawn(move || {
                let notes = link.backend().diagnose();
                let mut st = me.state.lock();
                st.last = Some((Instant::now(), notes));
                st.running_since = None;
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a backend query thread: {e}");
            self.state.lock().running_since = None;
        }
    }

    /// No query is running (the last answer is the current one).
    #[must_use]
    pub fn settled(&self) -> bool {
        self.state.lock().running_since.is_none()
    }

    /// The facts to report: the last answer, preceded by a warning when the backend has not
    /// answered the current query.
    #[must_use]
    pub fn notes(&self) -> Vec<String> {
        let st = self.state.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        if let Some(since) = st.running_since {
            let waited = now.saturating_duration_since(since);
            out.push(match &st.last {
                Some((at, _)) => format!(
                    "backend not answering: its diagnose query has waited {:.1} s; the facts below are from {:.1} s ago",
                    secs(waited),
                    secs(now.saturating_duration_since(*at))
                ),
                None => format!(
                    "backend not answering: its diagnose query has waited {:.1} s; no earlier answer",
                    secs(waited)
                ),
            });
        }
        if let Some((_, notes)) = &st.last {
            out.extend(notes.iter().cloned());
        }
        out
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
