//! The supervisor of tcmu-warden: the rules that keep a hung backend from hanging the target.
//!
//! So far: [`tiers`], the timeout tiers (backend < initiator `replacement_timeout` < kernel
//! `cmd_time_out`) checked when a device is added, and the handler's own per-command deadline.
#![forbid(unsafe_code)]

pub mod http;
pub mod metrics;
pub mod tiers;
