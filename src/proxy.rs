//! The PROXY protocol, versions 1 and 2 (HAProxy's specification), sans-IO:
//! a load balancer in front of sealgate sends the original client's address
//! before any SMTP, and sealgate uses it for profiles, limits, logs and the
//! Received header (OPS-8). Accepted only from `server.proxy_protocol_from`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// The original client (v1 TCP4/TCP6, v2 PROXY over TCP).
    Client(SocketAddr),
    /// v1 `UNKNOWN` or v2 `LOCAL` (the balancer's own health check): use
    /// the connection's real address.
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of this many octets.
    Done(Header, usize),
    NeedMore,
    Invalid(String),
}

/// Whether `input` starts like a PROXY header (for refusing one from an
/// untrusted address with a clear log line).
pub fn looks_like_proxy(input: &[u8]) -> bool {
    input.starts_with(b"PROXY ")
        || input.starts_with(&V2_SIGNATURE[..input.len().min(12)]) && input.len() >= 12
}

pub fn parse(input: &[u8]) -> Parsed {
    if input.len() >= 12 && input.starts_with(V2_SIGNATURE) {
        return parse_v2(input);
    }
    if input.len() < 12 && V2_SIGNATURE.starts_with(input) {
        return Parsed::NeedMore;
    }
    parse_v1(input)
}

/// v1: `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`, at most 107
/// octets.
fn parse_v1(input: &[u8]) -> Parsed {
    if !b"PROXY ".starts_with(&input[..input.len().min(6)]) {
        return Parsed::Invalid("not a PROXY header".into());
    }
    let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= 107 {
            Parsed::Invalid("v1 header longer than 107 octets".into())
        } else {
            Parsed::NeedMore
        };
    };
    if end + 2 > 107 {
        return Parsed::Invalid("v1 header longer than 107 octets".into());
    }
    let Ok(line) = std::str::from_utf8(&input[..end]) else {
        return Parsed::Invalid("v1 header is not ASCII".into());
    };
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Done(Header::Local, end + 2),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: Result<IpAddr, _> = src.parse();
            let port: Result<u16, _> = sport.parse();
            match (ip, port) {
                (Ok(ip), Ok(port)) if (*proto == "TCP4") == ip.is_ipv4() => {
                    Parsed::Done(Header::Client(SocketAddr::new(ip, port)), end + 2)
                }
                _ => Parsed::Invalid(format!("bad v1 header {line:?}")),
            }
        }
        _ => Parsed::Invalid(format!("bad v1 header {line:?}")),
    }
}

/// v2: signature, version/command, family/protocol, length, addresses.
fn parse_v2(input: &[u8]) -> Parsed {
    if input.len() < 16 {
        return Parsed::NeedMore;
    }
    let ver_cmd = input[12];
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid(format!("v2 header with version {}", ver_cmd >> 4));
    }
    let len = u16::from_be_bytes([input[14], input[15]]) as usize;
    let total = 16 + len;
    if input.len() < total {
        return Parsed::NeedMore;
    }
    let body = &input[16..total];
    match ver_cmd & 0x0F {
        0 => return Parsed::Done(Header::Local, total),
        1 => {}
        c => return Parsed::Invalid(format!("v2 header with command {c}")),
    }
    match input[13] {
        // AF_INET, STREAM
        0x11 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Parsed::Done(Header::Client(SocketAddr::new(IpAddr::V4(ip), port)), total)
        }
        // AF_INET6, STREAM
        0x21 if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Parsed::Done(
                Header::Client(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port)),
                total,
            )
        }
        // UNSPEC, or anything else we cannot use: the real address.
        0x00 => Parsed::Done(Header::Local, total),
        other => Parsed::Invalid(format!("v2 header with family/protocol {other:#04x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_split(input: &[u8]) -> Parsed {
        let whole = parse(input);
        for cut in 0..input.len() {
            match parse(&input[..cut]) {
                Parsed::NeedMore => {}
                other => panic!("prefix {cut} gave {other:?}"),
            }
        }
        whole
    }

    #[test]
    fn state_event_v1() {
        let h = b"PROXY TCP4 192.0.2.9 10.0.0.1 40000 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(h),
            Parsed::Done(Header::Client("192.0.2.9:40000".parse().unwrap()), 40)
        );
        assert_eq!(
            every_split(&h[..40]),
            Parsed::Done(Header::Client("192.0.2.9:40000".parse().unwrap()), 40)
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Done(Header::Local, 15));
        assert!(matches!(
            parse(b"PROXY TCP4 ::1 ::1 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(b"EHLO x\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(&[b'P'; 120]), Parsed::Invalid(_)));
    }

    #[test]
    fn state_event_v2() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 9, 10, 0, 0, 1, 0x9c, 0x40, 0, 25,
        ]);
        assert_eq!(
            every_split(&h),
            Parsed::Done(Header::Client("192.0.2.9:40000".parse().unwrap()), 28)
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Parsed::Done(Header::Local, 16));
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(matches!(parse(&bad), Parsed::Invalid(_)));
        assert!(
            looks_like_proxy(&h) && looks_like_proxy(b"PROXY TCP4 ") && !looks_like_proxy(b"EHLO")
        );
    }
}
