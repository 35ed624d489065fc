//! Print the man page of `tcmu-warden(8)` (roff), generated from the daemon's clap definition,
//! on stdout. `scripts/package.sh` ships it as `/usr/share/man/man8/tcmu-warden.8.gz`:
//!
//! ```sh
//! cargo run -q -p tcmu-warden --example man > tcmu-warden.8
//! ```

// The binary's source, for its `Cli` type; its `main` and helpers are not used here.
#[allow(dead_code)]
#[path = "../src/main.rs"]
mod daemon_main;

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let cmd = daemon_main::Cli::command().name("tcmu-warden");
    let man = clap_mangen::Man::new(cmd).section("8");
    man.render(&mut std::io::stdout().lock())
}
