//! The supervisor of tcmu-warden: the rules that keep a hung backend from hanging the target.
//!
//! - [`tiers`]: the timeout tiers (backend < initiator `replacement_timeout` < kernel
//!   `cmd_time_out`) checked when a device is added, and the handler's own per-command
//!   deadline;
//! - [`health`]: each backend's state (healthy, degraded, lost, recovering), pings and
//!   reopening with backoff;
//! - [`metrics`] and [`http`]: the Prometheus series and the `/metrics` endpoint.
#![forbid(unsafe_code)]

pub mod health;
pub mod http;
pub mod metrics;
pub mod tiers;
