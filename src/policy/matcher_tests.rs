//! Table tests for every matcher kind and for precedence. The gateway and
//! `sealgate explain` both go through `ProfileIndex::visit`, so these
//! tables hold for both.

use super::*;

fn host(s: &str) -> HostMatcher {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn host_matcher_syntax() {
    let table: &[(&str, Result<HostMatcher, ()>)] = &[
        (
            "192.0.2.10",
            Ok(HostMatcher::Ip("192.0.2.10".parse().unwrap())),
        ),
        (
            "2001:db8::1",
            Ok(HostMatcher::Ip("2001:db8::1".parse().unwrap())),
        ),
        (
            "::ffff:192.0.2.10",
            Ok(HostMatcher::Ip("192.0.2.10".parse().unwrap())),
        ),
        (
            "198.51.100.*",
            Ok(HostMatcher::Net {
                addr: "198.51.100.0".parse().unwrap(),
                len: 24,
            }),
        ),
        (
            "10.1.*",
            Ok(HostMatcher::Net {
                addr: "10.1.0.0".parse().unwrap(),
                len: 16,
            }),
        ),
        (
            "10.*",
            Ok(HostMatcher::Net {
                addr: "10.0.0.0".parse().unwrap(),
                len: 8,
            }),
        ),
        (
            "203.0.113.77/24",
            Ok(HostMatcher::Net {
                addr: "203.0.113.0".parse().unwrap(),
                len: 24,
            }),
        ),
        (
            "2001:db8::/32",
            Ok(HostMatcher::Net {
                addr: "2001:db8::".parse().unwrap(),
                len: 32,
            }),
        ),
        (
            "Mail.Partner-B.example.",
            Ok(HostMatcher::Name("mail.partner-b.example".into())),
        ),
        (
            "*.partner-b.example",
            Ok(HostMatcher::Wildcard("partner-b.example".into())),
        ),
        ("*", Ok(HostMatcher::Any)),
        ("10.0.0.0/33", Err(())),
        ("300.1.*", Err(())),
        ("mail.*", Err(())),
        ("1.2.3.4.5.*", Err(())),
        ("bad host", Err(())),
        ("*.", Err(())),
    ];
    for (text, want) in table {
        let got = text.parse::<HostMatcher>().map_err(|_| ());
        assert_eq!(&got, want, "{text}");
    }
    assert_eq!(
        ".example.com".parse::<SenderMatcher>(),
        Ok(SenderMatcher::Below("example.com".into()))
    );
    assert_eq!(
        "Example.COM".parse::<SenderMatcher>(),
        Ok(SenderMatcher::Exact("example.com".into()))
    );
    assert!("..x".parse::<SenderMatcher>().is_err());
}

/// Profiles 0..: each line one profile with one matcher.
fn index(hosts: &[&str], senders: &[&str]) -> ProfileIndex {
    let mut ix = ProfileIndex::default();
    for (i, h) in hosts.iter().enumerate() {
        ix.add_host(i, &host(h)).unwrap();
    }
    for (j, s) in senders.iter().enumerate() {
        ix.add_sender(hosts.len() + j, &s.parse().unwrap()).unwrap();
    }
    ix
}

fn client<'a>(ip: &str, name: Option<&'a str>, sender: Option<&'a str>) -> Client<'a> {
    Client {
        ip: ip.parse().unwrap(),
        name,
        sender_domain: sender,
    }
}

#[test]
fn precedence_most_specific_first() {
    // 0: exact IP, 1: /24, 2: /16 via star, 3: exact host, 4: wildcard,
    // 5: deeper wildcard, 6: default; 7: sender exact, 8: sender below.
    let ix = index(
        &[
            "192.0.2.10",
            "192.0.2.0/24",
            "192.0.*",
            "mail.b.example",
            "*.b.example",
            "*.x.b.example",
            "*",
        ],
        &["b.example", ".b.example"],
    );
    let table: &[(Client, Option<(usize, MatchedBy)>)] = &[
        (
            client("192.0.2.10", Some("mail.b.example"), Some("b.example")),
            Some((0, MatchedBy::Ip("192.0.2.10".into()))),
        ),
        (
            client("192.0.2.11", Some("mail.b.example"), None),
            Some((1, MatchedBy::Prefix("192.0.2.0/24".into()))),
        ),
        (
            client("192.0.3.1", None, None),
            Some((2, MatchedBy::Prefix("192.0.0.0/16".into()))),
        ),
        (
            client("198.51.100.1", Some("MAIL.b.example."), None),
            Some((3, MatchedBy::Host("mail.b.example".into()))),
        ),
        (
            client("198.51.100.1", Some("other.b.example"), None),
            Some((4, MatchedBy::WildcardHost("*.b.example".into()))),
        ),
        (
            client("198.51.100.1", Some("a.x.b.example"), None),
            Some((5, MatchedBy::WildcardHost("*.x.b.example".into()))),
        ),
        (
            client("198.51.100.1", Some("b.example"), None),
            Some((6, MatchedBy::Default)),
        ),
        (
            client("198.51.100.1", None, Some("b.example")),
            Some((7, MatchedBy::Sender("b.example".into()))),
        ),
        (
            client("198.51.100.1", None, Some("eu.b.example")),
            Some((8, MatchedBy::SenderBelow(".b.example".into()))),
        ),
        (
            client("198.51.100.1", None, Some("c.example")),
            Some((6, MatchedBy::Default)),
        ),
        (
            client("::ffff:192.0.2.10", None, None),
            Some((0, MatchedBy::Ip("192.0.2.10".into()))),
        ),
    ];
    for (c, want) in table {
        assert_eq!(&ix.select(c), want, "{c:?}");
        // `explain` sees the same winner first.
        assert_eq!(ix.candidates(c).first(), want.as_ref(), "{c:?}");
    }
    let all = ix.candidates(&client(
        "192.0.2.10",
        Some("mail.b.example"),
        Some("b.example"),
    ));
    let order: Vec<usize> = all.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        order,
        vec![0, 1, 2, 3, 4, 7, 6],
        "every loser, in precedence order (b.example is not below .b.example)"
    );
}

#[test]
fn no_default_means_no_profile() {
    let ix = index(&["10.*"], &[]);
    assert_eq!(ix.select(&client("11.0.0.1", None, None)), None);
    assert!(!ix.needs_names());
    assert!(index(&["*.example"], &[]).needs_names());
}

#[test]
fn ipv6_prefixes() {
    let ix = index(&["2001:db8::/32", "2001:db8:1::/48"], &[]);
    assert_eq!(
        ix.select(&client("2001:db8:1::5", None, None)).map(|s| s.0),
        Some(1)
    );
    assert_eq!(
        ix.select(&client("2001:db8:2::5", None, None)).map(|s| s.0),
        Some(0)
    );
    assert_eq!(ix.select(&client("192.0.2.1", None, None)), None);
}

#[test]
fn a_matcher_belongs_to_one_profile() {
    let mut ix = ProfileIndex::default();
    ix.add_host(0, &host("10.*")).unwrap();
    assert_eq!(ix.add_host(1, &host("10.0.0.0/8")), Err(0));
    assert_eq!(ix.add_host(1, &host("*")), Ok(()));
    assert_eq!(ix.add_host(2, &host("*")), Err(1));
}
