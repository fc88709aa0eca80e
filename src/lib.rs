//! sealgate: a secure email gateway.
//!
//! ```text
//! listener ─▶ shard event loop ─▶ TLS (rustls) ─▶ smtp::server ─▶ policy::check
//!                                                          │
//!                                                          ▼
//! remote ◀─ TLS (rustls) ◀─ smtp::client ◀─ delivery ◀─ spool (fsync, then 250)
//! ```
//!
//! Each room owns its data: `smtp` is sans-IO protocol code, `policy` is
//! pure functions over an immutable snapshot, `tls` builds rustls configs,
//! `shard` is the mio event loop that glues sockets, TLS and sessions,
//! `spool` is the durable store, `config` turns the TOML file into a
//! snapshot with every error reported at once.
//!
//! No `unsafe` outside the few calls into libc (each function that makes
//! one allows it, with a SAFETY comment at the call).
#![deny(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod cert;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dns;
pub mod explain;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
pub mod logbuf;
pub mod logs;
pub mod model;
pub mod policy;
pub mod probe;
pub mod proxy;
pub mod run;
pub mod shard;
pub mod smtp;
pub mod snapshot;
pub mod spool;
pub mod state;
pub mod status;
pub mod sts;
pub mod tls;
pub mod tlsrpt;
