//! The GlusterFS backend (subtype `glfs`). Not implemented yet: every open is refused.

use super::registry::OpenCtx;
use super::{Backend, OpenError};
use std::sync::Arc;
use std::time::Duration;

/// The cfgstring syntax, for people.
pub const CONFIG_DESC: &str = "glfs/<volume>@<host>[,<host>...][:<port>]/<path>";

/// Open a file on a gluster volume.
///
/// # Errors
/// Always, for now.
pub fn open(cfgstring: &str, _ctx: &OpenCtx) -> Result<Arc<dyn Backend>, OpenError> {
    Err(OpenError::Config {
        cfgstring: cfgstring.to_string(),
        reason: "the glfs backend is not implemented yet".into(),
    })
}

/// Validate a gluster cfgstring.
///
/// # Errors
/// Always, for now.
pub fn check_config(_cfgstring: &str, _ctx: &OpenCtx, _timeout: Duration) -> Result<(), String> {
    Err("the glfs backend is not implemented yet".into())
}
