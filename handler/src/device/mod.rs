//! One served LUN: its ring, its device thread, its workers.
//!
//! ```text
//!  kernel ──cmd_head──▶ device thread ──Job(Box<Ctx>)──▶ worker pool ──Io──▶ backend
//!    ▲                   │  decode, range-check,            (bounded,          │
//!    │                   │  emulate non-data commands        crossbeam)        │
//!    └──cmd_tail+kick────┘◀──────────── Box<Ctx> (completion channel + eventfd)┘
//! ```
//!
//! A command's context (`Box<Ctx>`) is preallocated and *moves* along this path: whoever
//! holds it owns the command, so it is completed to the ring exactly once, by the device
//! thread, when the box comes back.

pub mod caw_retry;
pub mod context;
pub mod deadline;
pub mod exec;
pub mod health;
pub mod link;
pub mod outliers;
pub mod range_lock;
pub mod reconfig;
pub mod thread;
pub mod workers;

pub use link::UnitAttention;
pub use reconfig::ReconfigError;
pub use thread::{
    spawn, AluaSource, Change, DeviceConfig, DeviceHandle, DeviceStats, FreeKeptBuf, ALUA_REFRESH,
};
