//! 4 KiB READs and WRITEs through the emulated ring into the real dispatcher with the RAM
//! backend, at batch sizes 1, 8 and 32, against the memcpy floor. See `bench/README.md`.
//!
//! `BENCH_QUICK=1` shortens everything (criterion and the table) to a smoke run.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tcmu_warden_bench::{format_table, measure, memcpy_floor, Memcpy, Op, Rig, IO_BYTES};

const BATCHES: [usize; 3] = [1, 8, 32];
const OPS: [Op; 2] = [Op::Read, Op::Write];

fn bench_ring(c: &mut Criterion) {
    for op in OPS {
        let mut g = c.benchmark_group(format!("ring/{}-4k", op.name()));
        for batch in BATCHES {
            g.throughput(Throughput::Elements(batch as u64));
            let mut rig = Rig::new();
            g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
                b.iter(|| rig.run_batch(op, batch));
            });
            rig.stop();
        }
        g.finish();
    }
}

fn bench_memcpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy-4k");
    for batch in BATCHES {
        g.throughput(Throughput::Bytes((batch * IO_BYTES) as u64));
        let mut m = Memcpy::new(batch);
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| m.copy())
        });
    }
    g.finish();
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    // Without `--bench` (e.g. `cargo test --benches`) criterion runs each benchmark once as
    // a test; keep the table just as short then.
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let short = quick || test_mode;

    let mut c = Criterion::default();
    if quick {
        c = c
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
            .sample_size(10);
    }
    let mut c = c.configure_from_args();
    bench_ring(&mut c);
    bench_memcpy(&mut c);
    c.final_summary();

    // The table: fixed command counts, CPU time from getrusage.
    let commands: u64 = if short { 2_000 } else { 20_000 };
    let memcpy_bytes: u64 = if short { 16 << 20 } else { 1 << 30 };
    let mut rows = Vec::new();
    for op in OPS {
        for batch in BATCHES {
            let floor = memcpy_floor(batch, memcpy_bytes);
            rows.push(measure(op, batch, commands, floor, true));
        }
    }
    // The cost of per-stage accounting and the outlier log: the same rows with it off.
    for op in OPS {
        for batch in [1, 32] {
            let floor = memcpy_floor(batch, memcpy_bytes);
            rows.push(measure(op, batch, commands, floor, false));
        }
    }
    println!();
    println!(
        "== tcmu-warden commands/s per core: 4 KiB commands, RAM backend, emulated ring, {commands} commands per row{} ==",
        if short { " (SHORT RUN, figures are indicative only)" } else { "" }
    );
    print!("{}", format_table(&rows));
    println!("acct = per-stage accounting and the outlier log on (the default) or off");
    println!("cpu  = getrusage(RUSAGE_SELF) user+sys over the run / commands: handler threads + the emulated kernel");
    println!("hdlr = cpu minus the benchmark thread's own (RUSAGE_THREAD): device thread + workers + RAM backend only");
    println!(
        "cmds/s/core = 1e9 / cpu ns; hdlr/memcpy = hdlr cpu ns per command / memcpy ns per 4 KiB"
    );
}
