//! One served LUN: its ring, its device thread, its lane in the shared worker pool.
//!
//! ```text
//!  kernel ──cmd_head──▶ device thread ──Job(Box<Ctx>)──▶ worker pool ──Io──▶ backend
//!    ▲                   │  decode, range-check,           (shared, a lane     │
//!    │                   │  emulate non-data commands       per device)        │
//!    └──cmd_tail+kick────┘◀──────────── Box<Ctx> (completion channel + eventfd)┘
//! ```
//!
//! A command's context (`Box<Ctx>`) is recycled (allocated as the queue depth grows) and
//! *moves* along this path: whoever holds it owns the command, so it is completed to the ring
//! exactly once, by the device thread, when the box comes back.
//!
//! On a backend that offers a file descriptor (the file backend), READ, WRITE and
//! SYNCHRONIZE CACHE skip the workers: the device thread submits them to its own io_uring
//! ([`uring`]) and reaps them in the same loop.
//!
//! What is decided per command ([`dispatch`]) and how a finished command is counted
//! ([`accounting`]) do not depend on how the loop that serves the ring is organised (the
//! `thread` module: one thread per LUN); the map of the modules is in docs/DESIGN.md.

pub mod accounting;
pub mod caw_retry;
pub mod context;
pub mod deadline;
pub mod dispatch;
pub mod exec;
pub mod file_copy;
pub mod handle;
pub mod health;
pub mod lba_status;
pub mod link;
pub mod loops;
pub mod outliers;
pub mod range_lock;
pub mod reconfig;
pub mod stats;
mod thread;
pub mod uring;
pub mod warm;
pub mod workers;
pub mod xcopy;

pub use handle::{
    spawn, AluaSink, AluaSource, Change, DeviceConfig, DeviceHandle, FreeKeptBuf,
    PersistWriteCache, StartTimes, ALUA_REFRESH,
};
pub use link::UnitAttention;
pub use loops::DeviceLoops;
pub use reconfig::ReconfigError;
pub use stats::DeviceStats;
