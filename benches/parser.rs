//! Command parser and DATA reader throughput. The handshake ceiling and
//! whole-session benches come with the load-generator issue.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sealgate::smtp::command;
use sealgate::smtp::data::{BareLineEndings, DataReader};

fn commands(c: &mut Criterion) {
    let lines: [&[u8]; 4] = [
        b"EHLO client.example.org",
        b"MAIL FROM:<sender@example.org> SIZE=2048 BODY=8BITMIME",
        b"RCPT TO:<recipient@example.com>",
        b"DATA",
    ];
    let mut g = c.benchmark_group("command");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse 4 commands", |b| {
        b.iter(|| {
            for l in &lines {
                std::hint::black_box(command::parse(std::hint::black_box(l)).ok());
            }
        })
    });
    g.finish();
}

fn data(c: &mut Criterion) {
    let mut msg = Vec::new();
    while msg.len() < 1 << 20 {
        msg.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
        msg.extend_from_slice(b"..a dot-stuffed line\r\n");
    }
    msg.extend_from_slice(b".\r\n");
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("read 1 MiB message", |b| {
        let mut out = Vec::with_capacity(msg.len());
        b.iter(|| {
            out.clear();
            let mut r = DataReader::new(1000, 25_000_000, BareLineEndings::Reject);
            std::hint::black_box(r.feed(&msg, &mut out))
        })
    });
    g.finish();
}

criterion_group!(benches, commands, data);
criterion_main!(benches);
