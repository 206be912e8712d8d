//! `herald-loadtest`: Herald's bundled load generator and smart sink.
//!
//! Not built yet: it is the subject of its own issue. Until then the end-to-end figures
//! are produced by `benches/src/bin/e2e.rs` (see `docs/benchmarks.md`).

fn main() {
    eprintln!("herald-loadtest is not built yet; see docs/benchmarks.md for the current benchmark driver");
    std::process::exit(2);
}
