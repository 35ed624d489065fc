// Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::sync::Arc;

use tcmu_ring::emu::{Completed, EmuConfig, EmuDoorbell, KernelEmu};
use tcmu_ring::{CmdCopy, DataArea, Doorbell, Entry, Response, Ring, RingError, TmrCopy};

pub const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
pub const WRITE10: [u8; 10] = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
pub const TUR: [u8; 6] = [0; 6];

pub struct H {
    pub emu: KernelEmu,
    pub ring: Ring,
    pub bell: EmuDoorbell,
    pub data: DataArea,
    pub cmd: CmdCopy,
    pub tmr: TmrCopy,
}

impl H {
    pub fn new(cfg: EmuConfig) -> H {
        let (emu, map, bell) = KernelEmu::new(cfg).expect("emu");
        let ring = Ring::new(Arc::new(map)).expect("ring");
        let data = ring.data_area();
        H {
            emu,
            ring,
            bell,
            data,
            cmd: CmdCopy::new(),
            tmr: TmrCopy::new(),
        }
    }

    pub fn small() -> H {
        H::new(EmuConfig {
            cmdr_size: 4096,
            data_size: 256 << 10,
            ..EmuConfig::default()
        })
    }

    pub fn next(&mut self) -> Option<Result<Entry, RingError>> {
        self.ring.next(&mut self.cmd, &mut self.tmr)
    }

    /// Reads one entry that must be a good CMD; returns its id.
    pub fn next_cmd(&mut self) -> u16 {
        match self.next() {
            Some(Ok(Entry::Cmd)) => self.cmd.cmd_id,
            other => panic!("expected a CMD, got {other:?}"),
        }
    }

    pub fn good(&mut self, id: u16) {
        self.ring.complete(id, &Response::good()).expect("complete");
    }

    /// publish + kick + reap.
    pub fn flush(&mut self) -> Vec<Completed> {
        if self.ring.publish() {
            self.bell.kick().unwrap();
            assert!(self.emu.wait_kick(std::time::Duration::from_secs(1)));
        }
        let mut out = Vec::new();
        self.emu.reap(&mut out).expect("no violation");
        out
    }
}
