// Links against DuckDB's prebuilt library unless `bundled-duckdb` compiles DuckDB in.
//
// libduckdb-sys finds `libduckdb.so` through `DUCKDB_LIB_DIR` (.cargo/config.toml) but tells
// the binaries nothing about where it is at run time; the rpath set here does, so the compactor
// and the test binaries start from any shell. The directory is resolved through the clone's
// `.libduckdb` symlink, so binaries outlive the clone that built them (CI's clones are deleted).
// tests/build.rs includes this file: its test binaries link DuckDB through this crate.

fn main() {
    println!("cargo::rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED_DUCKDB").is_some() {
        return;
    }
    let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") else {
        println!(
            "cargo::error=DUCKDB_LIB_DIR is not set (.cargo/config.toml sets it): run deploy/local/libduckdb, or build with --features bundled-duckdb (tlake-compactor, tlake-tests) to compile DuckDB in"
        );
        return;
    };
    // The link moves when deploy/local/libduckdb pins another library: link and rpath again.
    println!(
        "cargo::rerun-if-changed={}",
        std::path::Path::new(&dir).display()
    );
    match std::fs::canonicalize(&dir) {
        Ok(dir) if dir.join("libduckdb.so").is_file() => {
            println!("cargo::rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
        _ => println!(
            "cargo::error=DuckDB's prebuilt library is not at {}: run deploy/local/libduckdb (deploy/local/prerequisites does), or build with --features bundled-duckdb (tlake-compactor, tlake-tests) to compile DuckDB in",
            std::path::Path::new(&dir).display()
        ),
    }
}
