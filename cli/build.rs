//! `tlake sql` links DuckDB; the binary gets the same link search path and rpath as the compactor.
include!("../compactor/build.rs");
