//! Routes (OUT-1): where mail for a recipient domain goes, and under which
//! profile's outbound TLS rules.

use std::collections::HashMap;

/// Where a route sends mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The domain's MX records (A/AAAA when it has none, RFC 5321 §5.1).
    Mx,
    /// A fixed host name or `[IP]` literal, and port.
    Host { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub domain: String,
    pub via: Via,
    /// The port for `Via::Mx`.
    pub port: u16,
    /// Index into the profiles whose `[profile.client]` rules apply;
    /// `None` = opportunistic TLS, nothing verified.
    pub profile: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct Routes {
    exact: HashMap<String, Route>,
    default: Option<Route>,
}

impl Routes {
    pub fn add(&mut self, route: Route) {
        if route.domain == "*" {
            self.default = Some(route);
        } else {
            self.exact
                .insert(super::canonical_domain(&route.domain), route);
        }
    }

    /// The routes of named domains (not `*`), by domain.
    pub fn exact(&self) -> impl Iterator<Item = &Route> {
        let mut v: Vec<&Route> = self.exact.values().collect();
        v.sort_by(|a, b| a.domain.cmp(&b.domain));
        v.into_iter()
    }

    /// The route for a recipient domain: the domain's own, else `*`. With
    /// no `*` route, mail for other domains goes by MX.
    pub fn for_domain(&self, domain: &str) -> Route {
        let d = super::canonical_domain(domain);
        self.exact
            .get(&d)
            .or(self.default.as_ref())
            .cloned()
            .unwrap_or(Route {
                domain: "*".into(),
                via: Via::Mx,
                port: 25,
                profile: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_default_then_mx() {
        let mut r = Routes::default();
        assert_eq!(r.for_domain("x.example").via, Via::Mx);
        r.add(Route {
            domain: "Partner.Example".into(),
            via: Via::Host {
                host: "[127.0.0.2]".into(),
                port: 2525,
            },
            port: 25,
            profile: Some(0),
        });
        r.add(Route {
            domain: "*".into(),
            via: Via::Host {
                host: "smarthost.example".into(),
                port: 25,
            },
            port: 25,
            profile: None,
        });
        assert_eq!(r.for_domain("partner.example.").profile, Some(0));
        assert!(
            matches!(r.for_domain("other.example").via, Via::Host { ref host, .. } if host == "smarthost.example")
        );
    }
}

/// Which of the recipient's own policies delivery consults for a route
/// (docs/delivery.md): none when the route has a profile of its own (it
/// decides alone); otherwise DANE (TLSA at `dane`, the delivery port) and,
/// for MX delivery, MTA-STS, each as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub dane: Option<u16>,
    pub mta_sts: Option<super::Enforcement>,
}

impl Route {
    pub fn sources(&self, dane: super::Enforcement, mta_sts: super::Enforcement) -> Sources {
        use super::Enforcement;
        let own = self.profile.is_none();
        let port = match &self.via {
            Via::Mx => self.port,
            Via::Host { port, .. } => *port,
        };
        Sources {
            dane: (own && dane != Enforcement::Off).then_some(port),
            mta_sts: (own && matches!(self.via, Via::Mx) && mta_sts != Enforcement::Off)
                .then_some(mta_sts),
        }
    }
}

impl Route {
    /// Why DANE, and MTA-STS, are not consulted for this route (each
    /// reason is read only where [`Route::sources`] leaves the source out).
    pub fn not_consulted(
        &self,
        dane: super::Enforcement,
        mta_sts: super::Enforcement,
    ) -> (&'static str, &'static str) {
        use super::Enforcement;
        let profile = "the route's profile decides TLS";
        let dane_why = match (self.profile.is_some(), dane) {
            (true, _) => profile,
            (false, Enforcement::Off) => {
                "[outbound] dane is \"off\" (its default without [dns] dnssec)"
            }
            (false, Enforcement::Report | Enforcement::Enforce) => "it applies",
        };
        let sts_why = match (self.profile.is_some(), &self.via, mta_sts) {
            (true, _, _) => profile,
            (false, Via::Host { .. }, _) => {
                "MTA-STS applies to delivery by MX; this route goes to a fixed host"
            }
            (false, Via::Mx, Enforcement::Off) => "[outbound] mta_sts is \"off\"",
            (false, Via::Mx, Enforcement::Report | Enforcement::Enforce) => "it applies",
        };
        (dane_why, sts_why)
    }
}

/// The address of an address-literal host (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`): it needs no lookup (RFC 5321 §4.1.3).
pub fn literal_ip(host: &str) -> Option<std::net::IpAddr> {
    host.strip_prefix('[')?
        .strip_suffix(']')?
        .trim_start_matches("IPv6:")
        .parse()
        .ok()
}

/// `MX`, or `host:port`: how `sealgate policy` and `explain` name a route.
impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Mx => f.write_str("MX"),
            Via::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod sources_tests {
    use super::*;
    use crate::policy::Enforcement::{Enforce, Off, Report};

    fn route(via: Via, profile: Option<usize>) -> Route {
        Route {
            domain: "d.example".into(),
            via,
            port: 25,
            profile,
        }
    }

    /// A route's own profile decides alone; otherwise DANE at the port
    /// delivery uses, and MTA-STS for MX delivery only.
    #[test]
    fn which_published_policies_a_route_consults() {
        let mx = route(Via::Mx, None);
        assert_eq!(
            mx.sources(Enforce, Report),
            Sources {
                dane: Some(25),
                mta_sts: Some(Report)
            }
        );
        assert_eq!(
            mx.sources(Off, Off),
            Sources {
                dane: None,
                mta_sts: None
            }
        );
        let fixed = route(
            Via::Host {
                host: "relay.example".into(),
                port: 2525,
            },
            None,
        );
        assert_eq!(
            fixed.sources(Enforce, Enforce),
            Sources {
                dane: Some(2525),
                mta_sts: None
            }
        );
        let own = route(Via::Mx, Some(0));
        assert_eq!(
            own.sources(Enforce, Enforce),
            Sources {
                dane: None,
                mta_sts: None
            }
        );
    }
}
