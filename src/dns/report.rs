//! The text of `sealgate policy show|refresh|forget`: what DANE and
//! MTA-STS say of a domain now.

use hickory_resolver::TokioResolver;

use super::dane::{dane_targets, Validator};
use super::{mta_sts, NotConsulted, PolicyQuery, PolicyText, StsCache, StsLookup};
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
    (dane, sts): (Option<u16>, Option<StsLookup>),
    why_not: NotConsulted,
) -> PolicyText {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut failed = false;
    match action {
        PolicyQuery::Forget => {
            let text = if cache.forget(domain) {
                format!("{domain}: cached MTA-STS policy forgotten\n")
            } else {
                format!("{domain}: no MTA-STS policy was cached\n")
            };
            return PolicyText {
                text,
                failed: false,
            };
        }
        PolicyQuery::Refresh => {
            cache.forget(domain);
            if let Some(lookup) = &sts {
                // A lookup that failed is not "no policy" (RFC 8461 §3.1:
                // the TXT record says whether there is one).
                let name = format!("_mta-sts.{}.", domain.trim_end_matches('.'));
                match resolver.txt_lookup(name.clone()).await {
                    Err(e) if !(e.is_no_records_found() || e.is_nx_domain()) => {
                        failed = true;
                        let _ = writeln!(
                            out,
                            "MTA-STS: the lookup of {name} TXT failed: {}",
                            crate::model::plain_error(&e.to_string())
                        );
                    }
                    Ok(_) | Err(_) => {
                        let _ =
                            mta_sts::policy(resolver, cache, domain, lookup.roots.clone()).await;
                        if let Some(e) = cache.fetch_failure(domain) {
                            failed = true;
                            let _ = writeln!(out, "MTA-STS: the policy could not be fetched: {e}");
                        }
                    }
                }
            }
        }
        PolicyQuery::Show => {}
    }
    match dane {
        None => {
            let _ = writeln!(out, "DANE: not consulted: {}", why_not.dane);
        }
        Some(port) => match dane_targets(validator, domain, true, port).await {
            Err(e) => {
                failed = true;
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
            let _ = writeln!(out, "MTA-STS: not consulted: {}", why_not.mta_sts);
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
                None if failed => {}
                None => {
                    out.push_str("MTA-STS: no policy cached (none published, or not needed yet)\n")
                }
            }
        }
    }
    PolicyText { text: out, failed }
}
