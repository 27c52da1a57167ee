//! Link-time set-up for libtorch: an rpath so binaries and tests run without
//! `LD_LIBRARY_PATH`, and libtorch_cuda kept as a dependency when it can load.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo::rustc-check-cfg=cfg(torch_cuda_linked)");

    // torch-sys (links = "tch") exports its libtorch lib folder to dependents.
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo::warning=DEP_TCH_LIBTORCH_LIB not set; no rpath added");
        return;
    };
    println!("cargo::rustc-link-arg=-Wl,-rpath,{lib}");

    // Rust links with --as-needed, which drops libtorch_cuda (nothing refers
    // to it by symbol; it registers CUDA in its static initialisers), so CUDA
    // would be unavailable. Keep it, but only where it can be loaded: the
    // light CPU install has libtorch_cuda.so without cuBLAS, cuDNN and the
    // rest, and a binary that needs it would not start. The `cuda` feature
    // links it regardless, for a binary to run on a GPU machine with that
    // machine's torch/lib on LD_LIBRARY_PATH.
    let cuda = Path::new(&lib).join("libtorch_cuda.so");
    let forced = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    if cuda.exists() && (forced || all_dependencies_resolve(&cuda)) {
        println!(
            "cargo::rustc-link-arg=-Wl,--allow-shlib-undefined,--no-as-needed,-ltorch_cuda,--as-needed"
        );
        println!("cargo::rustc-cfg=torch_cuda_linked");
    } else if forced {
        println!(
            "cargo::warning=feature `cuda` set but {} is missing",
            cuda.display()
        );
    }
}

/// Whether the dynamic loader finds every library `so` needs (per `ldd`).
fn all_dependencies_resolve(so: &Path) -> bool {
    match Command::new("ldd").arg(so).output() {
        Ok(out) if out.status.success() => {
            !String::from_utf8_lossy(&out.stdout).contains("not found")
        }
        _ => false,
    }
}
