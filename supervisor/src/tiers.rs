//! Timeout tiers, learned from a production hang: a suspended gluster brick under a LUN whose
//! `cmd_time_out` was 0 (or longer than the initiator's `replacement_timeout`) left iSCSI
//! threads in D state and the target hung for good.
//!
//! The rule: the backend gives up first (its op timeout / ping timeout), then the handler
//! completes the command with a retryable status, and all of it happens before the kernel's
//! `cmd_time_out` fires; for a LUN exported over several ALUA paths, also before the
//! initiator's `replacement_timeout` ends the session, so the initiator can fail over.

use std::fmt;
use std::time::Duration;

/// The timeouts that apply to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    /// How long the backend may take before it gives up on an operation (RBD
    /// `osd_op_timeout`, Gluster `network.ping-timeout`, the configured file I/O timeout).
    pub backend: Duration,
    /// The initiator's `replacement_timeout` (open-iscsi's default is 120 s).
    pub replacement: Duration,
    /// The LUN is exported over several ALUA paths (multipath).
    pub multipath: bool,
    /// The kernel's `attrib/cmd_time_out`; zero means commands never time out.
    pub cmd_time_out: Duration,
}

/// A broken tier rule, with everything an operator needs to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// `cmd_time_out` is 0: a command the backend never answers stays in flight for ever.
    NeverTimesOut {
        /// The backend tier.
        backend: Duration,
    },
    /// `cmd_time_out` does not exceed the backend timeout.
    NotAboveBackend {
        /// The kernel tier.
        cmd_time_out: Duration,
        /// The backend tier.
        backend: Duration,
    },
    /// Multipath LUN whose `cmd_time_out` does not exceed `replacement_timeout`.
    NotAboveReplacement {
        /// The kernel tier.
        cmd_time_out: Duration,
        /// The initiator tier.
        replacement: Duration,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Finding::NeverTimesOut { backend } => write!(
                f,
                "cmd_time_out=0 means the kernel never times a command out: if the backend hangs, \
                 aborts, LUN resets and LUN removal hang with it (D state on the target). Set \
                 attrib/cmd_time_out above the backend timeout ({}s) before linking the LUN",
                backend.as_secs()
            ),
            Finding::NotAboveBackend {
                cmd_time_out,
                backend,
            } => write!(
                f,
                "cmd_time_out={}s does not exceed the backend timeout ({}s): the kernel would fail \
                 commands before the backend gives up on them. Raise attrib/cmd_time_out above {}s \
                 (before linking the LUN) or lower the backend timeout",
                cmd_time_out.as_secs(),
                backend.as_secs(),
                backend.as_secs()
            ),
            Finding::NotAboveReplacement {
                cmd_time_out,
                replacement,
            } => write!(
                f,
                "cmd_time_out={}s does not exceed the initiator's replacement_timeout ({}s) on a \
                 multipath LUN: the session is replaced before the kernel fails the command, so \
                 the command can be left behind on the old path. Raise attrib/cmd_time_out above \
                 {}s or lower node.session.timeo.replacement_timeout on the initiators",
                cmd_time_out.as_secs(),
                replacement.as_secs(),
                replacement.as_secs()
            ),
        }
    }
}

impl Tiers {
    /// Every rule this device breaks (empty: the tiers are sound).
    #[must_use]
    pub fn check(&self) -> Vec<Finding> {
        let mut v = Vec::new();
        if self.cmd_time_out.is_zero() {
            v.push(Finding::NeverTimesOut {
                backend: self.backend,
            });
            return v;
        }
        if self.cmd_time_out <= self.backend {
            v.push(Finding::NotAboveBackend {
                cmd_time_out: self.cmd_time_out,
                backend: self.backend,
            });
        }
        if self.multipath && self.cmd_time_out <= self.replacement {
            v.push(Finding::NotAboveReplacement {
                cmd_time_out: self.cmd_time_out,
                replacement: self.replacement,
            });
        }
        v
    }

    /// The handler's own deadline for a command: it completes the command with a retryable
    /// status by then, before the kernel's timer (which fires up to about a second late, as
    /// the kernel rounds it up to whole jiffies). Finite even when `cmd_time_out` is 0.
    #[must_use]
    pub fn handler_deadline(&self) -> Duration {
        let kernel = if self.cmd_time_out.is_zero() {
            // Nothing in the kernel will fail the command: use the initiator's patience.
            self.replacement
        } else {
            self.cmd_time_out
        };
        // Leave a tenth (at least 2 s, at most 10 s) for the completion to reach the kernel.
        let margin = (kernel / 10).clamp(Duration::from_secs(2), Duration::from_secs(10));
        kernel.saturating_sub(margin).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn tiers(backend: u64, replacement: u64, multipath: bool, cmd: u64) -> Tiers {
        Tiers {
            backend: s(backend),
            replacement: s(replacement),
            multipath,
            cmd_time_out: s(cmd),
        }
    }

    #[test]
    fn sound_tiers_pass() {
        assert!(tiers(10, 120, false, 30).check().is_empty());
        assert!(tiers(5, 20, true, 30).check().is_empty());
    }

    #[test]
    fn the_production_incident_is_caught() {
        // Gluster ping-timeout 42 s, cmd_time_out 0.
        let f = tiers(42, 120, true, 0).check();
        assert_eq!(f, vec![Finding::NeverTimesOut { backend: s(42) }]);
        let msg = f[0].to_string();
        assert!(
            msg.contains("cmd_time_out=0")
                && msg.contains("42s")
                && msg.contains("attrib/cmd_time_out"),
            "{msg}"
        );
    }

    #[test]
    fn each_rule_names_its_values_and_knob() {
        let f = tiers(42, 120, true, 30).check();
        assert_eq!(f.len(), 2);
        let a = f[0].to_string();
        assert!(
            a.contains("cmd_time_out=30s") && a.contains("backend timeout (42s)"),
            "{a}"
        );
        let b = f[1].to_string();
        assert!(
            b.contains("replacement_timeout (120s)")
                && b.contains("node.session.timeo.replacement_timeout"),
            "{b}"
        );
        // Single path: replacement_timeout does not matter.
        assert_eq!(tiers(5, 120, false, 30).check(), vec![]);
    }

    #[test]
    fn handler_deadline_is_before_the_kernel_and_finite() {
        assert_eq!(tiers(5, 120, false, 30).handler_deadline(), s(27));
        assert_eq!(tiers(5, 120, false, 300).handler_deadline(), s(290));
        assert_eq!(
            tiers(5, 120, false, 0).handler_deadline(),
            s(110),
            "cmd_time_out=0: bounded by the initiator"
        );
        assert_eq!(tiers(1, 2, false, 1).handler_deadline(), s(1));
    }
}
