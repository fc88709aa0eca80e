//! Every combination of the destination's policy inputs and the peer's
//! behaviour, run through the one outbound decision: route profile × DANE
//! state and mode × MTA-STS mode × what the message asked of TLS × the
//! peer (no STARTTLS, a failed handshake, a Verified, Trusted or Untrusted
//! certificate, one matching the TLSA records or not). Each result is
//! checked against the rules as the RFCs state them, written out here
//! independently of the code.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    None,
    /// `mandatory_tls` + `verify`.
    Strict,
    /// The same, `report_only`.
    StrictReportOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DaneState {
    None,
    /// Usable records that match the peer's certificate.
    Matching,
    /// Usable records that do not.
    Mismatch,
    Unusable,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    NoStartTls,
    HandshakeFails,
    Cert(Trust),
}

fn certificate() -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["mx.test".to_string()]).expect("params");
    params.self_signed(&key).expect("cert").der().clone()
}

fn rules(p: Profile) -> Option<ClientRules> {
    let strict = ClientRules {
        mandatory_tls: true,
        verify: true,
        ..Default::default()
    };
    match p {
        Profile::None => None,
        Profile::Strict => Some(strict),
        Profile::StrictReportOnly => Some(ClientRules {
            report_only: true,
            ..strict
        }),
    }
}

fn dane(state: DaneState, cert: &CertificateDer<'static>) -> Dane {
    // DANE-EE(3) Cert(0) Full(0): the certificate itself.
    let record = |data: Vec<u8>| crate::model::Tlsa {
        usage: 3,
        selector: 0,
        matching: 0,
        data,
    };
    match state {
        DaneState::None => Dane::None,
        DaneState::Matching => Dane::Usable {
            records: vec![record(cert.to_vec())],
            names: vec!["mx.test".into()],
        },
        DaneState::Mismatch => Dane::Usable {
            records: vec![record(vec![0; 32])],
            names: vec!["mx.test".into()],
        },
        DaneState::Unusable => Dane::Unusable,
        DaneState::Failed => Dane::Failed(crate::model::DaneFailure::ServFail {
            name: "_25._tcp.mx.test".into(),
        }),
    }
}

/// What the route profile's rules make of a certificate of `trust`, as
/// `tls::outbound::check_server` would.
fn profile_verdict(p: Profile, trust: Trust) -> Result<(), Refusal> {
    match (p, trust) {
        (Profile::None, _) | (Profile::Strict | Profile::StrictReportOnly, Trust::Verified) => {
            Ok(())
        }
        (Profile::Strict | Profile::StrictReportOnly, Trust::Trusted) => Err(Refusal::Names {
            names: vec!["other.test".into()],
            wanted: vec!["mx.test".into()],
        }),
        (Profile::Strict | Profile::StrictReportOnly, Trust::Untrusted) => Err(
            Refusal::NotTrusted(rustls::Error::General("unknown CA".into())),
        ),
    }
}

/// One combination of the inputs.
#[derive(Debug, Clone, Copy)]
struct Case {
    profile: Profile,
    dane_state: DaneState,
    dane_mode: Enforcement,
    sts: Sts,
    request: TlsRequest,
    peer: Peer,
}

/// What one run of the decision gave.
#[derive(Debug)]
struct Run {
    delivered: bool,
    /// The host was never connected to.
    passed_over: bool,
    level: TlsLevel,
    would_refuse: Vec<WouldRefuse>,
    /// The failure the messages were left with.
    failure: Option<Failure>,
}

/// Drives the decision as the shard's glue would, against a peer that
/// behaves as `peer` says (and speaks in the clear after a failed
/// handshake).
fn run(case: Case, cert: &CertificateDer<'static>) -> Run {
    let Case {
        profile,
        dane_state,
        dane_mode,
        sts,
        request,
        peer,
    } = case;
    let policy = Policy {
        rules: rules(profile),
        profile: (profile != Profile::None).then(|| "partner".to_string()),
        dane: dane_mode,
        request,
    };
    let target = Target {
        host: "mx.test".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 25)),
        dane: dane(dane_state, cert),
        sts,
    };
    let mut a = Attempt::new(policy, vec![target]);
    let now = 1_800_000_000;
    let mut failure = None;
    let mut passed_over = false;
    let mut delivered = false;
    match a.next_host() {
        Next::Exhausted(f) => {
            passed_over = true;
            failure = Some(f);
        }
        Next::Connect { tls, fresh, .. } => {
            assert_eq!(fresh, tls != a.policy.base_tls(), "{tls:?}");
            a.connected();
            let result = match (peer, tls) {
                (_, TlsMode::Off) => Ok(()),
                (Peer::NoStartTls, TlsMode::Mandatory) => Err(Failure::TlsNotOffered),
                (Peer::NoStartTls, TlsMode::Opportunistic) => Ok(()),
                (Peer::HandshakeFails, TlsMode::Mandatory | TlsMode::Opportunistic) => Err(
                    Failure::Handshake(rustls::Error::General("handshake failure".into())),
                ),
                (Peer::Cert(trust), TlsMode::Mandatory | TlsMode::Opportunistic) => {
                    let facts = CertFacts {
                        trust,
                        verdict: profile_verdict(profile, trust),
                        chain: vec![cert.clone()],
                        not_after: Some(now + 86_400),
                        version: "TLSv1.3",
                        cipher: "TLS13_AES_256_GCM_SHA384".into(),
                        bits: 256,
                        resumed: false,
                    };
                    a.tls_established(&facts, now)
                }
            };
            match result {
                Ok(()) => delivered = true,
                Err(f) => match a.host_failed(f, true, now) {
                    AfterFailure::RetryClear => {
                        assert_eq!(a.tls_mode(), TlsMode::Off);
                        match a.next_host() {
                            Next::Connect {
                                tls: TlsMode::Off,
                                addr,
                                ..
                            } => {
                                assert_eq!(addr.port(), 25, "the same host again");
                                a.connected();
                                delivered = true;
                            }
                            other => panic!("a clear retry connects in the clear: {other:?}"),
                        }
                    }
                    AfterFailure::NextHost => panic!("one host only"),
                    AfterFailure::GiveUp(f) => failure = Some(f),
                },
            }
        }
    }
    let summary = a.finish(delivered);
    Run {
        delivered,
        passed_over,
        level: summary.tls_level,
        would_refuse: summary.would_refuse,
        failure,
    }
}

const PROFILES: [Profile; 3] = [Profile::None, Profile::Strict, Profile::StrictReportOnly];
const DANE_STATES: [DaneState; 5] = [
    DaneState::None,
    DaneState::Matching,
    DaneState::Mismatch,
    DaneState::Unusable,
    DaneState::Failed,
];
const DANE_MODES: [Enforcement; 2] = [Enforcement::Enforce, Enforcement::Report];
const STS: [Sts; 4] = [
    Sts::None,
    Sts::Enforce,
    Sts::Testing { mx_ok: true },
    Sts::Testing { mx_ok: false },
];
const REQUESTS: [TlsRequest; 3] = [
    TlsRequest::Default,
    TlsRequest::Required,
    TlsRequest::NotRequired,
];
const PEERS: [Peer; 5] = [
    Peer::NoStartTls,
    Peer::HandshakeFails,
    Peer::Cert(Trust::Verified),
    Peer::Cert(Trust::Trusted),
    Peer::Cert(Trust::Untrusted),
];

#[test]
fn every_combination_follows_the_rules() {
    let cert = certificate();
    let mut runs = 0;
    for profile in PROFILES {
        for dane_state in DANE_STATES {
            for dane_mode in DANE_MODES {
                for sts in STS {
                    for request in REQUESTS {
                        for peer in PEERS {
                            let case = Case {
                                profile,
                                dane_state,
                                dane_mode,
                                sts,
                                request,
                                peer,
                            };
                            check(case, &run(case, &cert));
                            runs += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(runs, 3 * 5 * 2 * 4 * 3 * 5);
}

/// The rules, stated from the RFCs and docs/delivery.md.
fn check(c: Case, r: &Run) {
    let Case {
        profile,
        dane_state,
        dane_mode,
        sts,
        request,
        peer,
    } = c;
    let case = format!("{c:?}: {r:?}");
    // RFC 8689 §5: TLS-Required: No sets the recipient's policies aside.
    let (dane_state, sts) = match request {
        TlsRequest::NotRequired => (DaneState::None, Sts::None),
        TlsRequest::Default | TlsRequest::Required => (dane_state, sts),
    };
    let enforce = dane_mode == Enforcement::Enforce;
    let strict = profile == Profile::Strict;
    let dane_usable = matches!(dane_state, DaneState::Matching | DaneState::Mismatch);
    // RFC 8689 §4.2.1: authenticated by DANE, enforced MTA-STS or a
    // verifying profile, or not tried at all (5.7.30).
    let authenticated = (dane_usable && enforce) || sts == Sts::Enforce || strict;
    if request == TlsRequest::Required && !authenticated {
        assert!(r.passed_over && !r.delivered, "REQUIRETLS: {case}");
        assert!(matches!(r.failure, Some(Failure::RequireTls(_))), "{case}");
        return;
    }
    // RFC 7672 §2.2: a failed TLSA lookup, enforced: never connected.
    if dane_state == DaneState::Failed && enforce {
        assert!(r.passed_over && !r.delivered, "DANE lookup: {case}");
        assert!(matches!(r.failure, Some(Failure::Dane(_))), "{case}");
        return;
    }
    assert!(!r.passed_over, "{case}");
    let needs_tls = strict
        || request == TlsRequest::Required
        || (enforce
            && matches!(
                dane_state,
                DaneState::Matching | DaneState::Mismatch | DaneState::Unusable
            ))
        || sts == Sts::Enforce;
    let expect_delivered = match peer {
        // OUT-2: opportunistic TLS falls back to the clear.
        Peer::NoStartTls | Peer::HandshakeFails => !needs_tls,
        Peer::Cert(trust) => {
            let profile_refuses = strict && trust != Trust::Verified;
            let sts_refuses = sts == Sts::Enforce && trust != Trust::Verified;
            // RFC 7672 §3: usable TLSA records alone judge the certificate.
            let dane_refuses = enforce && dane_state == DaneState::Mismatch;
            !(profile_refuses || sts_refuses || dane_refuses)
        }
    };
    assert_eq!(r.delivered, expect_delivered, "delivered: {case}");
    // Report-only: each check that would have refused is counted once;
    // those made before connecting whether or not the mail then went.
    let mut expect = Vec::new();
    if dane_state == DaneState::Failed && !enforce {
        expect.push(WouldRefuse::DaneLookup);
    }
    if sts == (Sts::Testing { mx_ok: false }) {
        expect.push(WouldRefuse::StsMx);
    }
    if !r.delivered {
        assert_eq!(r.would_refuse, expect, "would refuse: {case}");
        return;
    }
    // The TLS level the delivery is counted under.
    let expect_level = match peer {
        Peer::NoStartTls | Peer::HandshakeFails => TlsLevel::None,
        Peer::Cert(_) if dane_state == DaneState::Matching => TlsLevel::Dane,
        Peer::Cert(Trust::Verified) if sts == Sts::Enforce => TlsLevel::MtaSts,
        Peer::Cert(trust) => trust.into(),
    };
    assert_eq!(r.level, expect_level, "level: {case}");
    match peer {
        Peer::Cert(trust) => {
            if profile == Profile::StrictReportOnly && trust != Trust::Verified {
                expect.push(WouldRefuse::ProfileCertificate);
            }
            if matches!(sts, Sts::Testing { .. }) && trust != Trust::Verified {
                expect.push(WouldRefuse::StsCertificate);
            }
            if !enforce && dane_state == DaneState::Mismatch {
                expect.push(WouldRefuse::DaneCertificate);
            }
        }
        Peer::NoStartTls | Peer::HandshakeFails => {
            if !enforce
                && matches!(
                    dane_state,
                    DaneState::Matching | DaneState::Mismatch | DaneState::Unusable
                )
            {
                expect.push(WouldRefuse::DaneNoTls);
            }
            if matches!(sts, Sts::Testing { .. }) {
                expect.push(WouldRefuse::StsNoTls);
            }
            if profile == Profile::StrictReportOnly {
                expect.push(WouldRefuse::ProfileNoTls);
            }
        }
    }
    assert_eq!(r.would_refuse, expect, "would refuse: {case}");
}

#[test]
fn the_next_host_after_a_refused_certificate_and_back_to_the_base_mode() {
    let cert = certificate();
    let policy = Policy {
        rules: None,
        profile: None,
        dane: Enforcement::Enforce,
        request: TlsRequest::Default,
    };
    let host = |name: &str, port: u16, dane: Dane| Target {
        host: name.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dane,
        sts: Sts::None,
    };
    let mismatch = dane(DaneState::Mismatch, &cert);
    let mut a = Attempt::new(
        policy,
        vec![
            host("mx1.test", 2501, mismatch),
            host("mx2.test", 2502, Dane::None),
        ],
    );
    assert_eq!(
        a.next_host(),
        Next::Connect {
            addr: SocketAddr::from(([127, 0, 0, 1], 2501)),
            tls: TlsMode::Mandatory,
            fresh: true
        },
        "TLSA records make TLS mandatory"
    );
    a.connected();
    let facts = CertFacts {
        trust: Trust::Untrusted,
        verdict: Ok(()),
        chain: vec![cert.clone()],
        not_after: None,
        version: "TLSv1.3",
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        bits: 128,
        resumed: false,
    };
    let f = a
        .tls_established(&facts, 0)
        .expect_err("no TLSA record matches");
    assert!(matches!(f, Failure::Tls(TlsFailure::Dane(_))), "{f:?}");
    assert_eq!(a.host_failed(f, true, 0), AfterFailure::NextHost);
    assert_eq!(
        a.next_host(),
        Next::Connect {
            addr: SocketAddr::from(([127, 0, 0, 1], 2502)),
            tls: TlsMode::Opportunistic,
            fresh: false
        },
        "the next host without DANE: opportunistic again"
    );
    let logs: Vec<String> = std::iter::from_fn(|| a.poll_log())
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        logs,
        [
            "Untrusted TLS connection established to mx1.test[127.0.0.1]:2501: TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256 (128/128 bits)",
            "delivery via mx1.test[127.0.0.1]:2501 failed: TLS failed: DANE: the server certificate matches no TLSA record",
        ]
    );
    let summary = a.finish(false);
    assert_eq!(summary.sessions.len(), 1);
    assert_eq!(
        summary.sessions[0].result.as_ref().map_err(|e| e.0),
        Err(tlsrpt::ResultType::TlsaInvalid)
    );
}

#[test]
fn a_refused_connection_passes_to_the_next_host_and_exhausts() {
    let policy = Policy {
        rules: None,
        profile: None,
        dane: Enforcement::Enforce,
        request: TlsRequest::Default,
    };
    let host = |port: u16| Target {
        host: "mx.test".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dane: Dane::None,
        sts: Sts::None,
    };
    let mut a = Attempt::new(policy, vec![host(1), host(2)]);
    assert!(matches!(a.next_host(), Next::Connect { fresh: false, .. }));
    a.connect_failed("Connection refused".into());
    assert!(matches!(a.next_host(), Next::Connect { fresh: false, .. }));
    a.connect_failed("Connection refused".into());
    assert_eq!(
        a.next_host(),
        Next::Exhausted(Failure::Connection("no host could be reached".into()))
    );
    assert_eq!(
        a.poll_log().map(|l| l.to_string()).as_deref(),
        Some("connect to mx.test[127.0.0.1]:1 failed: Connection refused")
    );
}
