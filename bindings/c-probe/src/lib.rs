//! Test support for the `-sys` crates: compile a small C program against the system headers,
//! run it, and read the `name value` lines it prints (sizes, offsets, constants), so that a
//! test can compare them with the Rust declarations. Used by each binding's `tests/layout.rs`.

use std::collections::HashMap;
use std::process::Command;

/// Compile `program` with `$CC` (default `cc`) and `cc_args` (warnings, include and link
/// flags), run it, and parse its output: one `name value` pair per line.
///
/// # Panics
/// When the compiler cannot run or fails (the message quotes its errors and names `what`,
/// the header being checked), or when the program prints something other than
/// `name value` lines: this is a test helper, and a panic is the test failing.
#[must_use]
pub fn c_values(program: &str, cc_args: &[&str], what: &str) -> HashMap<String, u64> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path().join("probe.c");
    let bin = dir.path().join("probe");
    std::fs::write(&src, program).expect("write the C probe");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .args(cc_args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(
        out.status.success(),
        "compiling against {what} failed (a declaration changed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin).output().expect("run the C probe");
    String::from_utf8(out.stdout)
        .expect("the probe prints text")
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("probe line {l:?} is not `name value`"));
            let v = v
                .parse()
                .unwrap_or_else(|e| panic!("probe line {l:?}: {e}"));
            (k.to_string(), v)
        })
        .collect()
}
