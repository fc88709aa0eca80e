//! The in-memory sessions the benches drive (benches/tls.rs times them,
//! benches/allocs.rs counts their allocations): only the server's part of
//! each exchange is measured, between `counting(true)` and
//! `counting(false)`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use sealgate::smtp::server::{Action, Peer, Session};
use sealgate::smtp::Endpoint;
use sealgate::snapshot::Snapshot;

/// Set while the server's part of a session runs.
pub static COUNTING: AtomicBool = AtomicBool::new(false);

pub fn counting(on: bool) {
    COUNTING.store(on, Ordering::Relaxed);
}

pub struct Pair {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

pub fn pair(alg: &'static rcgen::SignatureAlgorithm, group: &str, resumption: bool) -> Pair {
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
pub fn exchange(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
    server_time: &mut Duration,
) -> bool {
    let mut to_server = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut to_server).expect("client write");
    }
    let t = Instant::now();
    counting(true);
    let mut slice = &to_server[..];
    while !slice.is_empty() {
        server.read_tls(&mut slice).expect("server read");
        server.process_new_packets().expect("server process");
    }
    let mut to_client = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut to_client).expect("server write");
    }
    counting(false);
    *server_time += t.elapsed();
    let mut slice = &to_client[..];
    while !slice.is_empty() {
        client.read_tls(&mut slice).expect("client read");
        client.process_new_packets().expect("client process");
    }
    !to_server.is_empty() || !to_client.is_empty()
}

pub fn handshake_server_time(p: &Pair) -> Duration {
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = ClientConnection::new(p.client.clone(), name).expect("client");
    let t = Instant::now();
    counting(true);
    let mut server = ServerConnection::new(p.server.clone()).expect("server");
    counting(false);
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

/// Feeds plaintext to the session and collects its replies, as the shard
/// glue does; returns the action, if any.
pub fn feed(session: &mut Session, input: &[u8], out: &mut Vec<u8>) -> Option<Action> {
    let fed = session.feed(input, Instant::now());
    session.poll_output(out);
    fed.action
}

pub fn starttls_session_server_time(p: &Pair, snapshot: &Arc<Snapshot>) -> Duration {
    let peer = Peer {
        ip: "127.0.0.1".parse().expect("ip"),
        port: 40000,
        name: None,
    };
    let mut out = Vec::new();
    let t = Instant::now();
    counting(true);
    let mut session = Session::new(snapshot.clone(), peer);
    session.greet(Instant::now());
    session.poll_output(&mut out);
    feed(&mut session, b"EHLO client.example\r\n", &mut out);
    let action = feed(&mut session, b"STARTTLS\r\n", &mut out);
    assert!(matches!(action, Some(Action::StartTls)));
    let mut server = ServerConnection::new(p.server.clone()).expect("server");
    counting(false);
    let mut server_time = t.elapsed();

    let name = ServerName::try_from("localhost").expect("name");
    let mut client = ClientConnection::new(p.client.clone(), name).expect("client");
    while client.is_handshaking() || server.is_handshaking() {
        if !exchange(&mut client, &mut server, &mut server_time) {
            break;
        }
    }
    let t = Instant::now();
    counting(true);
    session.tls_established(sealgate::tls::facts(&server, None), Instant::now());
    counting(false);
    server_time += t.elapsed();

    for line in [&b"EHLO client.example\r\n"[..], b"QUIT\r\n"] {
        use std::io::{Read, Write};
        client.writer().write_all(line).expect("client write");
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).expect("client tls");
        }
        let t = Instant::now();
        counting(true);
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
        counting(false);
        server_time += t.elapsed();
        let mut slice = &to_client[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).expect("client read");
            client.process_new_packets().expect("client process");
        }
    }
    server_time
}

/// The snapshot an in-memory session runs under: STARTTLS with `p`'s
/// server configuration.
pub fn snapshot(p: &Pair) -> Arc<Snapshot> {
    let mut snapshot = Snapshot::for_tests("mx.bench", &["example.com"]);
    snapshot.tls = Some(p.server.clone());
    Arc::new(snapshot)
}
