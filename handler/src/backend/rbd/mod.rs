//! The Ceph RBD backend (subtype `rbd`). Not implemented yet: every open is refused.

use super::registry::OpenCtx;
use super::{Backend, OpenError};
use std::sync::Arc;
use std::time::Duration;

/// The cfgstring syntax, for people.
pub const CONFIG_DESC: &str = "rbd/<pool>[/<namespace>]/<image>[@<snapshot>][;osd_op_timeout=<secs>][;conf=<ceph.conf>][;id=<user>]";

/// Open an RBD image.
///
/// # Errors
/// Always, for now.
pub fn open(cfgstring: &str, _ctx: &OpenCtx) -> Result<Arc<dyn Backend>, OpenError> {
    Err(OpenError::Config {
        cfgstring: cfgstring.to_string(),
        reason: "the rbd backend is not implemented yet".into(),
    })
}

/// Validate an RBD cfgstring.
///
/// # Errors
/// Always, for now.
pub fn check_config(_cfgstring: &str, _ctx: &OpenCtx, _timeout: Duration) -> Result<(), String> {
    Err("the rbd backend is not implemented yet".into())
}
