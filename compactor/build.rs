// Links against DuckDB's prebuilt library unless `bundled-duckdb` compiles DuckDB in.
//
// The library is found through the clone's `.libduckdb` symlink (deploy/local/libduckdb makes it),
// or DUCKDB_LIB_DIR when set. It is deliberately not set in .cargo/config.toml's [env]: a
// `relative = true` value there is a different absolute path in every clone, and cargo counts
// [env] in every crate's fingerprint, so each new clone rebuilt all ~500 dependencies against a
// warm target dir. Without DUCKDB_LIB_DIR, libduckdb-sys only asks to link `duckdb`; this script
// says where it is (link search paths reach every crate that depends on this one) and sets the
// binaries' rpath, so the compactor and the test binaries start from any shell. The directory is
// resolved through the symlink, so binaries outlive the clone that built them (CI's clones are
// deleted). tests/build.rs and cli/build.rs include this file: their binaries link DuckDB too, and
// an rpath (a link argument) does not reach dependents.

fn main() {
    println!("cargo::rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED_DUCKDB").is_some() {
        return;
    }
    let dir = match std::env::var_os("DUCKDB_LIB_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let manifest =
                std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
            std::path::Path::new(&manifest).join("../.libduckdb")
        }
    };
    // The link moves when deploy/local/libduckdb pins another library: link and rpath again.
    println!("cargo::rerun-if-changed={}", dir.display());
    match std::fs::canonicalize(&dir) {
        Ok(dir) if dir.join("libduckdb.so").is_file() => {
            println!("cargo::rustc-link-search=native={}", dir.display());
            println!("cargo::rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
        _ => println!(
            "cargo::error=DuckDB's prebuilt library is not at {}: run deploy/local/libduckdb (deploy/local/prerequisites does), or build with --features bundled-duckdb (tlake-compactor, tlake-tests) to compile DuckDB in",
            dir.display()
        ),
    }
}
