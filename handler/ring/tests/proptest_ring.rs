//! Random workloads through KernelEmu + Ring: wraps, PADs, OOO completion, TMRs, KEEP_BUF.
#![cfg(feature = "test-utils")]

mod common;

use std::collections::HashMap;

use common::H;
use proptest::prelude::*;
use tcmu_ring::emu::{DataDir, EmuConfig, Full};
use tcmu_ring::{Doorbell, Entry, Response, STATUS_CHECK_CONDITION};

#[derive(Debug, Clone)]
enum Op {
    Submit { opc: u8, var: u8, dir: u8, len: u16 },
    Tmr { n: u8 },
    Drain,
    Complete { pick: u16, how: u8 },
    Publish,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..12, any::<u8>(), 0u8..4, 0u16..20000).prop_map(|(i, var, dir, len)| {
            const OPS: [u8; 12] = [0x00, 0x12, 0x28, 0x2a, 0x43, 0x5e, 0x7f, 0x88, 0xa0, 0xa3, 0xc1, 0xe5];
            Op::Submit { opc: OPS[i], var, dir, len }
        }),
        1 => (0u8..5).prop_map(|n| Op::Tmr { n }),
        3 => Just(Op::Drain),
        5 => (any::<u16>(), any::<u8>()).prop_map(|(pick, how)| Op::Complete { pick, how }),
        2 => Just(Op::Publish),
    ]
}

struct Sub {
    cdb: Vec<u8>,
    out: Vec<u8>,
    in_len: usize,
    from_device: bool,
    in_segs: Vec<tcmu_ring::DataSeg>,
}

struct Exp {
    status: u8,
    sense: [u8; 96],
    read_len: Option<u32>,
    data_in: Vec<u8>,
    kept: bool,
}

fn make_cdb(opc: u8, var: u8) -> Vec<u8> {
    let n = tcmu_ring::scsi_command_size(opc, var % 64);
    let mut c: Vec<u8> = (0..n)
        .map(|i| u8::try_from(i).unwrap().wrapping_mul(31).wrapping_add(var))
        .collect();
    c[0] = opc;
    if opc == 0x7f {
        c[7] = var % 64;
    }
    c
}

fn run(cfg: EmuConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = H::new(cfg);
    let mut subs: HashMap<u16, Sub> = HashMap::new(); // submitted, not yet read
    let mut read: Vec<u16> = Vec::new(); // read, not yet completed
    let mut sub_read: HashMap<u16, Sub> = HashMap::new();
    let mut exp: HashMap<u16, Exp> = HashMap::new(); // completed, not yet reaped
    let mut done = 0usize;
    let mut total = 0usize;
    let mut buf = Vec::new();
    let mut out = Vec::new();

    let drain = |h: &mut H,
                 subs: &mut HashMap<u16, Sub>,
                 read: &mut Vec<u16>,
                 sub_read: &mut HashMap<u16, Sub>|
     -> Result<(), TestCaseError> {
        h.bell.ack().unwrap();
        while let Some(e) = h.next() {
            match e.map_err(|e| TestCaseError::fail(e.to_string()))? {
                Entry::Cmd => {
                    let id = h.cmd.cmd_id;
                    let mut s = subs
                        .remove(&id)
                        .ok_or_else(|| TestCaseError::fail(format!("unexpected id {id}")))?;
                    prop_assert_eq!(h.cmd.cdb(), &s.cdb[..]);
                    let (dlen, blen) = if s.from_device {
                        (s.in_len, 0)
                    } else if s.in_len > 0 {
                        (s.out.len(), s.in_len)
                    } else {
                        (s.out.len(), 0)
                    };
                    prop_assert_eq!(h.cmd.data_len(), dlen as u64);
                    prop_assert_eq!(h.cmd.bidi_len(), blen as u64);
                    if !s.from_device {
                        let mut got = vec![0u8; s.out.len()];
                        prop_assert_eq!(
                            h.data.copy_to_slice(h.cmd.data_out(), 0, &mut got),
                            s.out.len()
                        );
                        prop_assert_eq!(&got, &s.out);
                    }
                    s.in_segs = if s.from_device {
                        h.cmd.data_out().to_vec()
                    } else {
                        h.cmd.bidi_in().to_vec()
                    };
                    read.push(id);
                    sub_read.insert(id, s);
                }
                Entry::Tmr => {}
                Entry::BadCmd { cmd_id, why } => prop_assert!(false, "bad cmd {} {}", cmd_id, why),
            }
        }
        Ok(())
    };

    let mut reap =
        |h: &mut H, exp: &mut HashMap<u16, Exp>, done: &mut usize| -> Result<(), TestCaseError> {
            if h.ring.publish() {
                h.bell.kick().unwrap();
            }
            out.clear();
            h.emu
                .reap(&mut out)
                .map_err(|v| TestCaseError::fail(v.to_string()))?;
            for c in &out {
                let e = exp.remove(&c.cmd_id).ok_or_else(|| {
                    TestCaseError::fail(format!("completed twice or unknown {}", c.cmd_id))
                })?;
                prop_assert_eq!(c.status, e.status);
                prop_assert_eq!(c.sense, e.sense);
                prop_assert_eq!(c.read_len, e.read_len);
                prop_assert_eq!(&c.data_in, &e.data_in, "data of {}", c.cmd_id);
                prop_assert_eq!(c.kept, e.kept);
                if c.kept {
                    h.emu
                        .free_kept_buf(c.cmd_id)
                        .map_err(|v| TestCaseError::fail(v.to_string()))?;
                }
                *done += 1;
            }
            Ok(())
        };

    for op in ops {
        match *op {
            Op::Submit { opc, var, dir, len } => {
                let cdb = make_cdb(opc, var);
                let len = usize::from(len);
                let out_data: Vec<u8> = (0..len)
                    .map(|i| u8::try_from((i * 7 + usize::from(var)) % 256).unwrap())
                    .collect();
                let (d, s) = match dir {
                    0 => (
                        DataDir::None,
                        Sub {
                            cdb: cdb.clone(),
                            out: vec![],
                            in_len: 0,
                            from_device: false,
                            in_segs: vec![],
                        },
                    ),
                    1 => (
                        DataDir::ToDevice(&out_data),
                        Sub {
                            cdb: cdb.clone(),
                            out: out_data.clone(),
                            in_len: 0,
                            from_device: false,
                            in_segs: vec![],
                        },
                    ),
                    2 => (
                        DataDir::FromDevice(len),
                        Sub {
                            cdb: cdb.clone(),
                            out: vec![],
                            in_len: len,
                            from_device: true,
                            in_segs: vec![],
                        },
                    ),
                    _ => {
                        let o = &out_data[..len / 3];
                        (
                            DataDir::Bidi {
                                out: o,
                                in_len: len - len / 3,
                            },
                            Sub {
                                cdb: cdb.clone(),
                                out: o.to_vec(),
                                in_len: len - len / 3,
                                from_device: false,
                                in_segs: vec![],
                            },
                        )
                    }
                };
                match h.emu.submit(&cdb, d) {
                    Ok(id) => {
                        prop_assert!(subs.insert(id, s).is_none());
                        total += 1;
                    }
                    Err(Full::Ring | Full::Data | Full::TooLarge) => {}
                    Err(e) => prop_assert!(false, "submit: {}", e),
                }
            }
            Op::Tmr { n } => {
                let ids: Vec<u16> = read.iter().take(usize::from(n)).copied().collect();
                let _ = h.emu.submit_tmr(5, &ids);
            }
            Op::Drain => drain(&mut h, &mut subs, &mut read, &mut sub_read)?,
            Op::Complete { pick, how } => {
                if read.is_empty() {
                    continue;
                }
                let id = read.swap_remove(usize::from(pick) % read.len());
                let s = sub_read.remove(&id).unwrap();
                let status = if how & 1 == 1 {
                    STATUS_CHECK_CONDITION
                } else {
                    0
                };
                let mut sense = [0u8; 96];
                if status == STATUS_CHECK_CONDITION {
                    sense
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, b)| *b = u8::try_from(i).unwrap() ^ how);
                    sense[0] = 0x70;
                }
                let in_len = s.in_len;
                // Data-In: fill fully, or partially with READ_LEN.
                let partial = s.from_device && how & 2 == 2 && in_len > 0;
                let n = if partial { (in_len / 2).max(1) } else { in_len };
                buf.clear();
                buf.extend((0..n).map(|i| u8::try_from((i + usize::from(id)) % 256).unwrap()));
                let keep = how & 4 == 4 && how & 8 == 8;
                exp.insert(
                    id,
                    Exp {
                        status,
                        sense,
                        read_len: partial.then(|| u32::try_from(n).unwrap()),
                        data_in: buf.clone(),
                        kept: keep,
                    },
                );
                // Write the data through the segments recorded at read time.
                prop_assert_eq!(h.data.copy_from_slice(&s.in_segs, 0, &buf), n);
                let sense_ref = (status == STATUS_CHECK_CONDITION).then_some(&sense);
                h.ring
                    .complete(
                        id,
                        &Response {
                            status,
                            sense: sense_ref,
                            read_len: partial.then(|| u32::try_from(n).unwrap()),
                            keep_buf: keep,
                        },
                    )
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(h.ring.complete(id, &Response::good()).is_err());
            }
            Op::Publish => reap(&mut h, &mut exp, &mut done)?,
        }
    }
    // Finish: drain, complete everything, reap; repeat until the kernel has nothing left.
    for _ in 0..4 {
        drain(&mut h, &mut subs, &mut read, &mut sub_read)?;
        while let Some(id) = read.pop() {
            let s = sub_read.remove(&id).unwrap();
            buf.clear();
            buf.extend((0..s.in_len).map(|i| u8::try_from((i + usize::from(id)) % 256).unwrap()));
            h.data.copy_from_slice(&s.in_segs, 0, &buf);
            exp.insert(
                id,
                Exp {
                    status: 0,
                    sense: [0; 96],
                    read_len: None,
                    data_in: buf.clone(),
                    kept: false,
                },
            );
            h.ring
                .complete(id, &Response::good())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        reap(&mut h, &mut exp, &mut done)?;
    }
    prop_assert!(subs.is_empty());
    prop_assert!(exp.is_empty());
    prop_assert_eq!(done, total);
    prop_assert_eq!(h.ring.outstanding(), 0);
    prop_assert_eq!(h.emu.outstanding(), 0);
    prop_assert_eq!(h.emu.ring_used(), 0);
    prop_assert_eq!(h.emu.data_blocks_free(), h.emu.data_blocks());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_workload(
        cmdr in prop::sample::select(vec![1024u32, 2048, 4096, 8192, 16384]),
        scatter in any::<bool>(),
        blocks in prop::sample::select(vec![16u64, 32, 64]),
        ops in prop::collection::vec(op_strategy(), 1..200),
    ) {
        let cfg = EmuConfig { cmdr_size: cmdr, data_size: blocks * 4096, block_size: 4096, scatter, ..EmuConfig::default() };
        run(cfg, &ops)?;
    }
}
