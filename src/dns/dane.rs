//! DNSSEC-aware lookups for DANE (RFC 7672 §2.2): the MX RRset, each
//! host's addresses and TLSA records, with their status from the
//! resolver's AD bit or from our own validation.

use std::net::IpAddr;
use std::sync::Arc;
use strum::EnumCount;

use futures_util::StreamExt;
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::{DnsHandle, DnsRequestOptions};
use hickory_resolver::TokioResolver;

use super::{mx_order, Found, LookupError};
use crate::model::{Dane, DaneFailure, Sts, Tlsa};

/// Where the DNSSEC status of an answer comes from.
pub(super) enum Validator {
    /// The configured resolver's AD bit.
    TrustAd(Arc<NameServerPool<TokioConnectionProvider>>),
    /// A validating resolver of our own.
    InProcess(Arc<TokioResolver>),
}

/// What the DANE lookups found, for `sealgate_dane_lookups_total`.
#[derive(Debug, Default)]
pub struct DaneStats {
    /// Indexed by [`DaneResult`].
    pub results: [std::sync::atomic::AtomicU64; DaneResult::COUNT],
}

/// The outcome of one host's DANE lookups.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::EnumCount, strum::IntoStaticStr,
)]
#[strum(serialize_all = "lowercase")]
pub enum DaneResult {
    /// Secure TLSA records, some usable.
    Ok,
    /// Secure TLSA records, none usable.
    Unusable,
    /// Not signed (or no TLSA): DANE does not apply.
    Insecure,
    /// SERVFAIL from the validating resolver: bogus, or unreachable.
    Bogus,
    /// No answer (timeout).
    Tempfail,
}

impl DaneResult {
    /// The `result` label of `sealgate_dane_lookups_total`.
    pub fn label(self) -> &'static str {
        self.into()
    }

    fn of(dane: &Dane) -> DaneResult {
        match dane {
            Dane::None => DaneResult::Insecure,
            Dane::Usable { .. } => DaneResult::Ok,
            Dane::Unusable => DaneResult::Unusable,
            Dane::Failed(DaneFailure::ServFail { .. }) => DaneResult::Bogus,
            Dane::Failed(DaneFailure::Unanswered { .. }) => DaneResult::Tempfail,
        }
    }
}

pub(super) fn count_dane(stats: &DaneStats, found: &[Found]) {
    let mut seen: Vec<&str> = Vec::new();
    for f in found {
        if !seen.contains(&f.host.as_str()) {
            seen.push(&f.host);
            // The counters are in declaration order.
            let i = DaneResult::of(&f.dane) as usize;
            stats.results[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// An answer from the validating resolver: its records and whether it set
/// the AD bit (RFC 4035 §3.2.3; RFC 6840 §5.8).
struct Signed {
    records: Vec<hickory_resolver::proto::rr::Record>,
    secure: bool,
}

/// How a DNSSEC-aware query can end.
enum Unsigned {
    /// NXDOMAIN or no records of the type (the denial's own status is not
    /// needed: no records means no DANE and no addresses).
    Empty,
    Failed(DaneFailure),
}

/// One query whose answer carries its DNSSEC status: with the DO bit to
/// the configured (validating) resolver, reading its AD bit; or through
/// our own validating resolver, reading each record's proof.
async fn signed_query(v: &Validator, name: &str, rtype: RecordType) -> Result<Signed, Unsigned> {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::ProtoErrorKind;
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let qname = Name::from_ascii(&fqdn).map_err(|e| {
        Unsigned::Failed(DaneFailure::Unanswered {
            name: fqdn.clone(),
            reason: e.to_string(),
        })
    })?;
    let pool = match v {
        Validator::TrustAd(pool) => pool,
        Validator::InProcess(resolver) => {
            use hickory_proto::dnssec::Proof;
            return match resolver.lookup(qname, rtype).await {
                Ok(lookup) => {
                    let records = lookup.records().to_vec();
                    if records.iter().any(|r| r.proof() == Proof::Bogus) {
                        return Err(Unsigned::Failed(DaneFailure::ServFail { name: fqdn }));
                    }
                    Ok(Signed {
                        secure: !records.is_empty()
                            && records.iter().all(|r| r.proof() == Proof::Secure),
                        records,
                    })
                }
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => Err(Unsigned::Empty),
                Err(e) => Err(Unsigned::Failed(DaneFailure::Unanswered {
                    name: fqdn,
                    reason: e.to_string(),
                })),
            };
        }
    };
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = true;
    options.use_edns = true;
    options.edns_set_dnssec_ok = true;
    let mut responses = pool.lookup(Query::query(qname, rtype), options);
    match responses.next().await {
        Some(Ok(response)) => Ok(Signed {
            secure: response.header().authentic_data(),
            records: response.answers().to_vec(),
        }),
        Some(Err(e)) => match e.kind() {
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NXDomain | ResponseCode::NoError,
                ..
            } => Err(Unsigned::Empty),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::ServFail,
                ..
            } => Err(Unsigned::Failed(DaneFailure::ServFail { name: fqdn })),
            _ => Err(Unsigned::Failed(DaneFailure::Unanswered {
                name: fqdn,
                reason: e.to_string(),
            })),
        },
        None => Err(Unsigned::Failed(DaneFailure::Unanswered {
            name: fqdn,
            reason: "no answer".into(),
        })),
    }
}

/// A host's addresses with their DNSSEC status and the name its CNAME
/// chain ends at (RFC 7672 §2.2.2).
async fn signed_addresses(
    pool: &Validator,
    host: &str,
) -> Result<(Vec<IpAddr>, bool, String), LookupError> {
    let mut ips = Vec::new();
    let mut secure = true;
    let mut canonical = host.to_string();
    let mut any = false;
    for rtype in [RecordType::A, RecordType::AAAA] {
        match signed_query(pool, host, rtype).await {
            Ok(answer) => {
                any = true;
                secure &= answer.secure;
                for r in &answer.records {
                    match r.data() {
                        RData::A(a) => ips.push(IpAddr::V4(a.0)),
                        RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
                        RData::CNAME(target) => {
                            canonical = target.0.to_string().trim_end_matches('.').to_string();
                        }
                        _ => {}
                    }
                }
            }
            Err(Unsigned::Empty) => {}
            Err(Unsigned::Failed(f)) => return Err(LookupError::Temporary(f.to_string())),
        }
    }
    if !any || ips.is_empty() {
        return Err(LookupError::NotFound(format!("{host}: no address")));
    }
    Ok((ips, secure, canonical.to_ascii_lowercase()))
}

/// The TLSA records at `_PORT._tcp.NAME` when the answer is validated;
/// `None` when it is not signed.
pub(super) async fn validated_tlsa(
    pool: &Validator,
    name: &str,
    port: u16,
) -> Result<Option<Vec<Tlsa>>, DaneFailure> {
    tlsa(pool, name, port).await
}

/// The TLSA records at `_PORT._tcp.NAME` (RFC 6698 §3, RFC 7672 §2.2.3).
async fn tlsa(pool: &Validator, name: &str, port: u16) -> Result<Option<Vec<Tlsa>>, DaneFailure> {
    let base = format!("_{port}._tcp.{}", name.trim_end_matches('.'));
    match signed_query(pool, &base, RecordType::TLSA).await {
        // An unsigned TLSA RRset is no DANE (RFC 7672 §2.2).
        Ok(answer) if !answer.secure => Ok(None),
        Ok(answer) => {
            let records: Vec<Tlsa> = answer
                .records
                .iter()
                .filter_map(|r| match r.data() {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: u8::from(t.cert_usage()),
                        selector: u8::from(t.selector()),
                        matching: u8::from(t.matching()),
                        data: t.cert_data().to_vec(),
                    }),
                    _ => None,
                })
                .collect();
            Ok((!records.is_empty()).then_some(records))
        }
        Err(Unsigned::Empty) => Ok(None),
        Err(Unsigned::Failed(f)) => Err(f),
    }
}

/// What DANE says of one host whose address records are `secure` (RFC
/// 7672 §2.2): TLSA at the CNAME-expanded name first, then at the name
/// itself.
async fn host_dane(pool: &Validator, host: &str, canonical: &str, secure: bool, port: u16) -> Dane {
    if !secure {
        return Dane::None;
    }
    let mut names = vec![canonical.to_string()];
    if canonical != host {
        names.push(host.to_string());
    }
    for name in &names {
        match tlsa(pool, name, port).await {
            Ok(Some(records)) => {
                let usable: Vec<Tlsa> = records.into_iter().filter(Tlsa::usable).collect();
                // Found at the expanded name: it and the MX host name are
                // reference identifiers; at the MX host name: that alone.
                let names = if *name == canonical {
                    names.clone()
                } else {
                    vec![host.to_string()]
                };
                return if usable.is_empty() {
                    Dane::Unusable
                } else {
                    Dane::Usable {
                        records: usable,
                        names,
                    }
                };
            }
            Ok(None) => {}
            Err(f) => return Dane::Failed(f),
        }
    }
    Dane::None
}

/// [`targets`] with DNSSEC status and TLSA records (RFC 7672 §2.2): DANE
/// applies to an MX host only when the MX RRset and the host's addresses
/// are secure.
pub(super) async fn dane_targets(
    pool: &Validator,
    name: &str,
    mx: bool,
    port: u16,
) -> Result<Vec<Found>, LookupError> {
    let (hosts, mx_secure): (Vec<String>, bool) = if !mx {
        (vec![name.to_string()], true)
    } else {
        match signed_query(pool, name, RecordType::MX).await {
            Ok(answer) => {
                let records: Vec<(u16, String)> = answer
                    .records
                    .iter()
                    .filter_map(|r| match r.data() {
                        RData::MX(mx) => Some((
                            mx.preference(),
                            mx.exchange()
                                .to_string()
                                .trim_end_matches('.')
                                .to_ascii_lowercase(),
                        )),
                        _ => None,
                    })
                    .collect();
                (mx_order(records)?, answer.secure)
            }
            // RFC 5321 §5.1: no MX: the domain itself (its own status
            // decides, RFC 7672 §2.2.1).
            Err(Unsigned::Empty) => (vec![name.to_string()], true),
            Err(Unsigned::Failed(f)) => return Err(LookupError::Temporary(f.to_string())),
        }
    };
    let mut out = Vec::new();
    let mut last_error = None;
    for host in hosts {
        match signed_addresses(pool, &host).await {
            Ok((ips, secure, canonical)) => {
                let dane = host_dane(pool, &host, &canonical, mx_secure && secure, port).await;
                out.extend(ips.into_iter().map(|ip| Found {
                    host: host.clone(),
                    ip,
                    dane: dane.clone(),
                    sts: Sts::None,
                }));
            }
            Err(e) => last_error = Some(e),
        }
    }
    if out.is_empty() {
        return Err(last_error.unwrap_or_else(|| {
            LookupError::NotFound(format!("{name}: no MX host has an address"))
        }));
    }
    Ok(out)
}
