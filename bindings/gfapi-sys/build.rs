//! Link libgfapi through pkg-config (`glusterfs-api`, from Debian's `libglusterfs-dev`).
//!
//! The pkg-config binary is called directly: one probe, no build dependency. A missing
//! package fails the build with a message that names the package to install.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let out = Command::new("pkg-config")
        .args(["--libs", "--cflags", "glusterfs-api"])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => fail(&format!(
            "pkg-config does not know glusterfs-api: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!("cannot run pkg-config: {e}")),
    };
    let flags = String::from_utf8_lossy(&out.stdout);
    for f in flags.split_whitespace() {
        if let Some(dir) = f.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = f.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        } else if let Some(dir) = f.strip_prefix("-I") {
            println!("cargo:include={dir}");
        }
    }
}

fn fail(why: &str) -> ! {
    eprintln!(
        "error: gfapi-sys needs libgfapi and its pkg-config file glusterfs-api ({why}).\n\
         On Debian/Ubuntu install the package libglusterfs-dev \
         (scripts/install-gluster-deps.sh does), or build tcmu-warden without the \
         `glfs` feature (--no-default-features --features rbd)."
    );
    std::process::exit(1);
}
