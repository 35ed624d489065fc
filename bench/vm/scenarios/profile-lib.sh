# shellcheck shell=dash
# Guest half of bench/vm/profile.sh (busybox sh): bench/vm/bench.py puts this file after
# bench-lib.sh when profiling, and it redefines bench-lib.sh's profiling hooks so that every
# job of the scenario runs under Linux's perf (the "perf" initramfs layer,
# tests/vm/layers/perf.sh). Only software events and tracepoints: they work under TCG.
#
# Per job, three perf processes are started before fio, disabled (`-D -1`), and switched on
# and off through their control fifos exactly around the job's measurement window:
#   - perf stat -p DAEMON: task-clock, context switches, migrations, page faults, every
#     system call (raw_syscalls:sys_enter) and the calls of the hot path by name. perf
#     switches these per-thread counters on one after another, which takes most of a second
#     under TCG, and a per-thread counter's time only runs while its thread is on a CPU, so
#     profile.py takes each count per second of the daemon's CPU time (count / the counter's
#     own running time) times the daemon's CPU per I/O of the window (/proc, bench-lib.sh);
#     the guest kernel has no perf cgroup events (`--for-each-cgroup` is not supported);
#   - perf stat -a: the same basic counts for the whole guest (fio, kworkers, io-wq, idle);
#   - perf record -a -g -e cpu-clock: samples of everything (kernel call chains; user-space
#     chains only where frame pointers exist).
# After the job the reports are written on the results channel, one "prof=SEQ:KIND|LINE"
# line each (KIND: stat-daemon, stat-all, flat-all, flat-daemon, callers-daemon,
# folded-daemon); bench/vm/profile.py turns them into files and per-I/O figures.

: "${BENCH_PROF_FREQ:=997}"              # samples per second and CPU (cpu-clock)
: "${BENCH_PROF_CALLERS:=1}"             # 0: no call-graph report of the daemon (it is slow)
PROF_BASIC=task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter
# The daemons' hot-path system calls, counted by name (x86_64 tracepoints of Linux 6.1).
PROF_SYSCALLS="read write epoll_wait poll ppoll io_uring_enter futex pread64 pwrite64 preadv
pwritev preadv2 pwritev2 fdatasync sched_yield nanosleep clock_nanosleep clock_gettime
gettimeofday epoll_pwait"
PROF_DIR=/tmp/prof
PROF_PIDS=""

_prof_setup_done=0
_prof_setup() {
    [ "$_prof_setup_done" = 1 ] && return 0
    _prof_setup_done=1
    command -v perf >/dev/null || { log "profile: no perf in the guest (layer missing)"; return 1; }
    mkdir -p "$PROF_DIR"
    [ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
    echo 0 >/proc/sys/kernel/kptr_restrict 2>/dev/null || true
    echo -1 >/proc/sys/kernel/perf_event_paranoid 2>/dev/null || true
    # A sample a millisecond under TCG is fine; perf must not throttle it away.
    echo 50 >/proc/sys/kernel/perf_cpu_time_max_percent 2>/dev/null || true
    result perf_version "$(perf version 2>&1 | head -n1)"
    result clocksource "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
}

# _prof_on_off NAME CMD: the same with shell builtins only (a fork costs tens of ms under TCG
# with fio running, and the window must not wait for it); perf holds both fifos open
# (O_RDWR), so neither open blocks, and it answers at once. Bounded by the scenario's
# vm-timeout if perf died since it was armed.
_prof_on_off() {
    [ -p "$PROF_DIR/$1.ctl" ] || return 0
    echo "$2" >"$PROF_DIR/$1.ctl" && read -r _a <"$PROF_DIR/$1.ack"
}

# _prof_ctl NAME CMD: send CMD to perf NAME's control fifo and wait (bounded) for its ack.
_prof_ctl() {
    [ -p "$PROF_DIR/$1.ctl" ] || return 0
    timeout 30 sh -c "echo $2 >'$PROF_DIR/$1.ctl' && read -r _a <'$PROF_DIR/$1.ack'" || {
        log "profile: perf $1 did not ack '$2'; not asked again"
        cat "$PROF_DIR/$1.log" >&2 2>/dev/null || true
        rm -f "$PROF_DIR/$1.ctl"
    }
}

# _prof_start NAME ARGS...: perf ARGS in the background, disabled, with control fifos.
_prof_start() {
    _n=$1; shift
    rm -f "$PROF_DIR/$_n.ctl" "$PROF_DIR/$_n.ack"
    mkfifo "$PROF_DIR/$_n.ctl" "$PROF_DIR/$_n.ack"
    perf "$@" -D -1 --control "fifo:$PROF_DIR/$_n.ctl,$PROF_DIR/$_n.ack" \
        >"$PROF_DIR/$_n.log" 2>&1 </dev/null &
    PROF_PIDS="$PROF_PIDS $!"
    # Its first ack says it has set its events up (under TCG that takes a second or more).
    _prof_ctl "$_n" disable
}

prof_arm() {
    _prof_setup || return 0
    PROF_PIDS=""
    rm -f "$PROF_DIR"/*
    _ev=$PROF_BASIC
    for _s in $PROF_SYSCALLS; do
        [ -d "/sys/kernel/tracing/events/syscalls/sys_enter_$_s" ] && _ev="$_ev,syscalls:sys_enter_$_s"
    done
    if [ -n "$HPID" ]; then
        _prof_start daemon stat -x, -e "$_ev" -p "$HPID" -o "$PROF_DIR/stat-daemon.csv"
    fi
    _prof_start all stat -x, -a -e "$PROF_BASIC" -o "$PROF_DIR/stat-all.csv"
    _prof_start rec record -a -g -e cpu-clock -F "$BENCH_PROF_FREQ" -N -q -o "$PROF_DIR/perf.data"
}

prof_on() {
    for _n in daemon all rec; do _prof_on_off "$_n" enable; done
}

prof_off() {
    for _n in rec all daemon; do _prof_on_off "$_n" disable; done
}

# _prof_emit KIND FILE: FILE's lines on the results channel.
_prof_emit() {
    [ -s "$2" ] || { bench_out "prof=$seq:$1|(no output)"; return 0; }
    sed "s/^/prof=$seq:$1|/" "$2" >/dev/ttyS1
}

prof_done() {
    [ -n "$PROF_PIDS" ] || return 0
    for _p in $PROF_PIDS; do kill -INT "$_p" 2>/dev/null || true; done
    for _p in $PROF_PIDS; do
        _i=0
        while kill -0 "$_p" 2>/dev/null && [ "$_i" -lt 300 ]; do sleep 0.1; _i=$((_i + 1)); done
        kill -KILL "$_p" 2>/dev/null || true
        wait "$_p" 2>/dev/null || true
    done
    PROF_PIDS=""
    _prof_emit stat-daemon "$PROF_DIR/stat-daemon.csv"
    _prof_emit stat-all "$PROF_DIR/stat-all.csv"
    _d=$PROF_DIR/perf.data
    if [ -s "$_d" ]; then
        _r="perf report -i $_d --stdio --no-children -n -g none --percent-limit 0.3"
        $_r --sort comm,dso,sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 150 >"$PROF_DIR/flat-all.txt"
        _prof_emit flat-all "$PROF_DIR/flat-all.txt"
        if [ -n "$HPID" ]; then
            $_r --pid "$HPID" --percentage relative --sort comm,dso,sym 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -n 120 >"$PROF_DIR/flat-daemon.txt"
            _prof_emit flat-daemon "$PROF_DIR/flat-daemon.txt"
            if [ "$BENCH_PROF_CALLERS" = 1 ]; then
                perf report -i "$_d" --stdio --no-children --pid "$HPID" --percentage relative \
                    --sort sym -g graph,2,callee,function,percent --percent-limit 2 2>/dev/null |
                    grep -v '^#' | grep -v '^$' | head -n 500 >"$PROF_DIR/callers-daemon.txt"
                _prof_emit callers-daemon "$PROF_DIR/callers-daemon.txt"
            fi
            # Folded stacks (outermost first, "count frame;frame;..."), per thread of the daemon.
            perf report -i "$_d" --stdio --no-children --pid "$HPID" --sort comm \
                -g folded,0.5,caller,count 2>/dev/null | grep -v '^#' | grep -v '^$' |
                head -n 300 >"$PROF_DIR/folded-daemon.txt"
            _prof_emit folded-daemon "$PROF_DIR/folded-daemon.txt"
        fi
    fi
    for _n in daemon all rec; do
        [ -s "$PROF_DIR/$_n.log" ] && grep -qi 'error\|fail\|not supported\|invalid' "$PROF_DIR/$_n.log" &&
            _prof_emit "log-$_n" "$PROF_DIR/$_n.log"
    done
    rm -f "$PROF_DIR"/*
}
