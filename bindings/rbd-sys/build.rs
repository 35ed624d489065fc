//! Link librbd and librados. Debian ships no pkg-config file for them, so the libraries are
//! linked by name; the headers are checked first so a missing development package fails the
//! build with a message that says which packages to install, not with a linker error.

use std::path::Path;

const HEADERS: &[&str] = &["rbd/librbd.h", "rados/librados.h"];

fn main() {
    println!("cargo:rerun-if-env-changed=RBD_SYS_INCLUDE_DIR");
    let include = std::env::var("RBD_SYS_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
    let missing: Vec<String> = HEADERS
        .iter()
        .map(|h| Path::new(&include).join(h))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        panic!(
            "\n\nrbd-sys: the librbd/librados headers are missing ({}).\n\
             Install Debian's development packages:  apt-get install librbd-dev librados-dev\n\
             (scripts/install-ceph-deps.sh does), or build without the RBD backend:\n\
             cargo build --no-default-features --features glfs\n\n",
            missing.join(", ")
        );
    }
    for h in HEADERS {
        println!("cargo:rerun-if-changed={include}/{h}");
    }
    println!("cargo:rustc-link-lib=dylib=rbd");
    println!("cargo:rustc-link-lib=dylib=rados");
    println!("cargo:include={include}");
}
