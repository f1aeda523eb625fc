//! Build script: validates every WGSL shader with naga (a broken shader is a build
//! error, not a runtime surprise) and embeds libtorch's folder as an rpath so neither
//! the binary nor `cargo test` needs `LD_LIBRARY_PATH`.

use std::path::Path;

fn main() {
    validate_shaders(Path::new("shaders"));
    link_libtorch();
}

fn validate_shaders(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    entries.sort();
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
            panic!(
                "WGSL parse error in {}:\n{}",
                path.display(),
                e.emit_to_string_with_path(&source, path.to_string_lossy().as_ref())
            )
        });
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        );
        if let Err(e) = validator.validate(&module) {
            panic!(
                "WGSL validation error in {}:\n{}",
                path.display(),
                e.emit_to_string_with_path(&source, path.to_string_lossy().as_ref())
            );
        }
    }
}

fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    // torch-sys (a direct dependency, `links = "tch"`) exports its libtorch folder.
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        // rustc puts --as-needed before the libraries and link args after them, so a
        // bare --no-as-needed would still drop libtorch_cuda (CUDA then silently
        // unavailable). Scope it with push/pop-state.
        for arg in [
            "-Wl,--push-state,--no-as-needed",
            "-ltorch_cuda",
            "-lc10_cuda",
            "-ltorch",
            "-Wl,--pop-state",
        ] {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
}
