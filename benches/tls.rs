//! The physical limit and our distance from it (PERF-2, product.md §5).
//!
//! - `handshake/*`: a bare rustls server handshake (TLS 1.3, full, no
//!   resumption) over an in-memory transport. Only the server's work is
//!   timed (connection setup, reading the client's flights, producing its
//!   own), so the figure is the server CPU a handshake costs: the ceiling.
//! - `session/starttls-ecdsa-p256`: a whole inbound STARTTLS session in
//!   memory — banner, EHLO, STARTTLS, the same handshake, EHLO, QUIT —
//!   through sealgate's sans-IO session and rustls, again timing only the
//!   server side. Its ratio to the bare handshake is the overhead sealgate
//!   adds above the ceiling (before sockets and the kernel).
//!
//! The client offers X25519 alone in these (the key exchange the load
//! generator uses by default); the `-x25519mlkem768` groups repeat them
//! with the post-quantum hybrid, and the `-resumed` groups with a session
//! ticket from the previous handshake (TLS 1.3 PSK with X25519, no
//! certificate or signature).

mod session;

use criterion::{criterion_group, criterion_main, Criterion};
use session::{handshake_server_time, pair, starttls_session_server_time};

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    for (name, alg) in [
        ("ecdsa-p256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("rsa-2048", &rcgen::PKCS_RSA_SHA256),
    ] {
        let p = pair(alg, "X25519", false);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake_server_time(&p)).sum())
        });
    }
    g.finish();
    for (group, kx, resumed) in [
        ("handshake-x25519mlkem768", "X25519MLKEM768", false),
        ("handshake-resumed", "X25519", true),
    ] {
        let p = pair(&rcgen::PKCS_ECDSA_P256_SHA256, kx, resumed);
        // The first handshake leaves the ticket the next one resumes with.
        handshake_server_time(&p);
        let mut g = c.benchmark_group(group);
        g.bench_function("ecdsa-p256", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake_server_time(&p)).sum())
        });
        g.finish();
    }
}

fn sessions(c: &mut Criterion) {
    for (group, kx, resumed) in [
        ("session", "X25519", false),
        ("session-x25519mlkem768", "X25519MLKEM768", false),
        ("session-resumed", "X25519", true),
    ] {
        let p = pair(&rcgen::PKCS_ECDSA_P256_SHA256, kx, resumed);
        let snapshot = session::snapshot(&p);
        starttls_session_server_time(&p, &snapshot);
        let mut g = c.benchmark_group(group);
        g.bench_function("starttls-ecdsa-p256", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| starttls_session_server_time(&p, &snapshot))
                    .sum()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, handshakes, sessions);
criterion_main!(benches);
