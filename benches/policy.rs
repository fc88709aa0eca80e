//! Profile lookup with 10,000 profiles (IN-4): exact IPs, prefixes, CIDRs,
//! host names, wildcards and sender domains, looked up the way a session
//! does (by address and name at connect, then with the sender at MAIL).
//! Target: under 1 µs per lookup, no lock.

use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use sealgate::policy::matcher::{Client, HostMatcher, ProfileIndex, SenderMatcher};

fn index() -> ProfileIndex {
    let mut ix = ProfileIndex::default();
    for i in 0..10_000usize {
        let (a, b, c) = ((i >> 16) as u8, (i >> 8) as u8, i as u8);
        let m: HostMatcher = match i % 5 {
            0 => format!("10.{a}.{b}.{c}").parse().unwrap(),
            1 => format!("172.{b}.{c}.*").parse().unwrap(),
            2 => format!("100.{b}.{c}.4/30").parse().unwrap(),
            3 => format!("mail{i}.partner.example").parse().unwrap(),
            _ => format!("*.p{i}.example").parse().unwrap(),
        };
        ix.add_host(i, &m).unwrap();
        if i % 2 == 0 {
            let s: SenderMatcher = format!("s{i}.example").parse().unwrap();
            ix.add_sender(i, &s).unwrap();
        }
    }
    ix.add_host(10_000, &"*".parse().unwrap()).unwrap();
    ix
}

fn lookups(c: &mut Criterion) {
    let ix = index();
    let clients: Vec<(IpAddr, Option<String>, Option<String>)> = (0..1000usize)
        .map(|i| {
            let i = i * 10 + (i % 5);
            let ip = IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8));
            let name = match i % 3 {
                0 => Some(format!("mail{i}.partner.example")),
                1 => Some(format!("mx.a.p{i}.example")),
                _ => None,
            };
            (ip, name, Some(format!("s{i}.example")))
        })
        .collect();
    let mut g = c.benchmark_group("policy");
    g.bench_function("select among 10,000 profiles", |b| {
        let mut n = 0usize;
        b.iter(|| {
            let (ip, name, sender) = &clients[n % clients.len()];
            n += 1;
            std::hint::black_box(ix.select(&Client {
                ip: *ip,
                name: name.as_deref(),
                sender_domain: sender.as_deref(),
            }))
        })
    });
    g.bench_function("select, no match but the default", |b| {
        let c = Client {
            ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            name: Some("unknown.host.example"),
            sender_domain: Some("nobody.example"),
        };
        b.iter(|| std::hint::black_box(ix.select(&c)))
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
