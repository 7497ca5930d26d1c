//! Compiles tpgate's sockmap verdict program (`bpf/sockmap.c`) with clang when clang is
//! there (`CLANG` names another one). Without it tpgate is built without the sockmap path
//! and relays every DIRECT flow with splice; the build says so.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tpgate_bpf)");
    println!("cargo::rerun-if-changed=bpf/sockmap.c");
    println!("cargo::rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("sockmap.o");
    let arch_headers = format!(
        "-I/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    let built = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-Wall",
            "-Werror",
            &arch_headers,
        ])
        .args(["-c", "bpf/sockmap.c", "-o"])
        .arg(&out)
        .status();
    match built {
        Ok(s) if s.success() => println!("cargo::rustc-cfg=tpgate_bpf"),
        Ok(s) => println!(
            "cargo::warning=`{clang} -target bpf` failed ({s}): tpgate is built without the \
             sockmap relay"
        ),
        Err(e) => println!(
            "cargo::warning=no `{clang}` ({e}): tpgate is built without the sockmap relay \
             (install clang to have it)"
        ),
    }
}
