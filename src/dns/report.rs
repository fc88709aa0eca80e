//! The text of `sealgate policy show|refresh|forget`: what DANE and
//! MTA-STS say of a domain now.

use hickory_resolver::TokioResolver;

use super::dane::{dane_targets, Validator};
use super::{mta_sts, PolicyQuery, StsCache, StsLookup};
use crate::model::Dane;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of `sealgate policy show|refresh|forget`.
pub(super) async fn policy_report(
    resolver: &TokioResolver,
    validator: &Validator,
    cache: &StsCache,
    domain: &str,
    action: PolicyQuery,
    dane: Option<u16>,
    sts: Option<StsLookup>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match action {
        PolicyQuery::Forget => {
            return if cache.forget(domain) {
                format!("{domain}: cached MTA-STS policy forgotten\n")
            } else {
                format!("{domain}: no MTA-STS policy was cached\n")
            };
        }
        PolicyQuery::Refresh => {
            cache.forget(domain);
            if let Some(lookup) = &sts {
                let _ = mta_sts::policy(resolver, cache, domain, lookup.roots.clone()).await;
            }
        }
        PolicyQuery::Show => {}
    }
    match dane {
        None => out.push_str(
            "DANE: not consulted ([outbound] dane off, [dns] dnssec off, or a route profile)\n",
        ),
        Some(port) => match dane_targets(validator, domain, true, port).await {
            Err(e) => {
                let _ = writeln!(out, "DANE: lookup failed: {e}");
            }
            Ok(found) => {
                let mut seen: Vec<String> = Vec::new();
                for f in found {
                    if seen.contains(&f.host) {
                        continue;
                    }
                    seen.push(f.host.clone());
                    let what = match &f.dane {
                        Dane::None => "not DANE (unsigned zone, or no TLSA records)".to_string(),
                        Dane::Unusable => {
                            "TLSA records, none usable: TLS required, not authenticated".to_string()
                        }
                        Dane::Failed(e) => {
                            format!("lookup failed: {e}: deferred, never in the clear")
                        }
                        Dane::Usable { records, .. } => {
                            let list: Vec<String> = records
                                .iter()
                                .map(|r| {
                                    format!(
                                        "{} {} {} {}",
                                        r.usage,
                                        r.selector,
                                        r.matching,
                                        hex(&r.data)
                                    )
                                })
                                .collect();
                            format!("DNSSEC-signed TLSA at port {port}: {}", list.join(", "))
                        }
                    };
                    let _ = writeln!(out, "DANE: {}: {what}", f.host);
                }
            }
        },
    }
    match sts {
        None => {
            out.push_str("MTA-STS: not consulted ([outbound] mta_sts off, or a route profile)\n")
        }
        Some(_) => {
            let now = crate::model::unix_now();
            match cache.snapshot().policies.get(domain) {
                Some(c) => {
                    let _ = writeln!(
                        out,
                        "MTA-STS: policy id {} fetched {} s ago, expires in {} s: mode {}, mx {}, max_age {}",
                        c.id,
                        now.saturating_sub(c.fetched),
                        c.expires().saturating_sub(now),
                        c.policy.mode.as_str(),
                        c.policy.mx.join(", "),
                        c.policy.max_age
                    );
                }
                None => {
                    out.push_str("MTA-STS: no policy cached (none published, or not needed yet)\n")
                }
            }
        }
    }
    out
}
