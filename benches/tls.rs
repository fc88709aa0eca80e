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

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use sealgate::smtp::server::{Action, Peer, Session};
use sealgate::smtp::Endpoint;
use sealgate::snapshot::Snapshot;

struct Pair {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn pair(alg: &'static rcgen::SignatureAlgorithm, group: &str, resumption: bool) -> Pair {
    let key = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let server = sealgate::tls::server_config(
        sealgate::tls::CertAndKey {
            chain: vec![cert.der().clone()],
            key: key_der,
        },
        std::path::Path::new("bench"),
    )
    .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![sealgate::tls::kx_group(group).expect("group")];
    let mut client = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resumption {
        client.resumption = rustls::client::Resumption::disabled();
    }
    Pair {
        server,
        client: Arc::new(client),
    }
}

/// Moves the client's pending TLS bytes to the server and the server's
/// answer back, timing the server's part. Returns false when neither side
/// had anything to say.
fn exchange(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
    server_time: &mut Duration,
) -> bool {
    let mut to_server = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut to_server).expect("client write");
    }
    let t = Instant::now();
    let mut slice = &to_server[..];
    while !slice.is_empty() {
        server.read_tls(&mut slice).expect("server read");
        server.process_new_packets().expect("server process");
    }
    let mut to_client = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut to_client).expect("server write");
    }
    *server_time += t.elapsed();
    let mut slice = &to_client[..];
    while !slice.is_empty() {
        client.read_tls(&mut slice).expect("client read");
        client.process_new_packets().expect("client process");
    }
    !to_server.is_empty() || !to_client.is_empty()
}

fn handshake_server_time(p: &Pair) -> Duration {
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = ClientConnection::new(p.client.clone(), name).expect("client");
    let t = Instant::now();
    let mut server = ServerConnection::new(p.server.clone()).expect("server");
    let mut server_time = t.elapsed();
    while client.is_handshaking() || server.is_handshaking() {
        if !exchange(&mut client, &mut server, &mut server_time) {
            break;
        }
    }
    // The server's session ticket flight, part of its handshake work.
    exchange(&mut client, &mut server, &mut server_time);
    server_time
}

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

/// Feeds plaintext to the session and collects its replies, as the shard
/// glue does; returns the action, if any.
fn feed(session: &mut Session, input: &[u8], out: &mut Vec<u8>) -> Option<Action> {
    let fed = session.feed(input, Instant::now());
    session.poll_output(out);
    fed.action
}

fn starttls_session_server_time(p: &Pair, snapshot: &Arc<Snapshot>) -> Duration {
    let peer = Peer {
        ip: "127.0.0.1".parse().expect("ip"),
        port: 40000,
        name: None,
    };
    let mut out = Vec::new();
    let t = Instant::now();
    let mut session = Session::new(snapshot.clone(), peer);
    session.greet(Instant::now());
    session.poll_output(&mut out);
    feed(&mut session, b"EHLO client.example\r\n", &mut out);
    let action = feed(&mut session, b"STARTTLS\r\n", &mut out);
    assert!(matches!(action, Some(Action::StartTls)));
    let mut server = ServerConnection::new(p.server.clone()).expect("server");
    let mut server_time = t.elapsed();

    let name = ServerName::try_from("localhost").expect("name");
    let mut client = ClientConnection::new(p.client.clone(), name).expect("client");
    while client.is_handshaking() || server.is_handshaking() {
        if !exchange(&mut client, &mut server, &mut server_time) {
            break;
        }
    }
    let t = Instant::now();
    session.tls_established(sealgate::tls::facts(&server, None), Instant::now());
    server_time += t.elapsed();

    for line in [&b"EHLO client.example\r\n"[..], b"QUIT\r\n"] {
        use std::io::{Read, Write};
        client.writer().write_all(line).expect("client write");
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).expect("client tls");
        }
        let t = Instant::now();
        let mut slice = &to_server[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).expect("read");
            server.process_new_packets().expect("process");
        }
        let mut plain = [0u8; 4096];
        let n = server.reader().read(&mut plain).expect("plaintext");
        out.clear();
        feed(&mut session, &plain[..n], &mut out);
        server.writer().write_all(&out).expect("server write");
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).expect("server tls");
        }
        server_time += t.elapsed();
        let mut slice = &to_client[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).expect("client read");
            client.process_new_packets().expect("client process");
        }
    }
    server_time
}

fn sessions(c: &mut Criterion) {
    for (group, kx, resumed) in [
        ("session", "X25519", false),
        ("session-x25519mlkem768", "X25519MLKEM768", false),
        ("session-resumed", "X25519", true),
    ] {
        let p = pair(&rcgen::PKCS_ECDSA_P256_SHA256, kx, resumed);
        let mut snapshot = Snapshot::for_tests("mx.bench", &["example.com"]);
        snapshot.tls = Some(p.server.clone());
        let snapshot = Arc::new(snapshot);
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
