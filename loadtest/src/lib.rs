//! sealgate-load: the load generator and SMTP sink bundled with sealgate
//! (PERF-2). The binary's command line is in `main.rs`; the pieces are
//! here so tests and benches can use them.

pub mod cpu;
pub mod engine;
pub mod reply;
pub mod script;
pub mod sink;
pub mod stats;
pub mod tlsconf;
