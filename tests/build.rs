//! The test binaries link DuckDB through tlake-compactor; they get the same rpath.
include!("../compactor/build.rs");
