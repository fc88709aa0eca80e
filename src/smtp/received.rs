//! The trace header prepended to every accepted message (RFC 5321 §4.4,
//! `with` keywords from RFC 3848, TLS details in the format gateway
//! operators already read: `(version=… cipher=… bits=… verify=…)`).

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::model::{rfc5322_date, Envelope};

/// Builds the complete `Received:` field, folded, ending in CRLF.
pub fn header(env: &Envelope, by_host: &str, queue_id: &str, at: SystemTime) -> String {
    // RFC 3848 §1: ESMTPS = ESMTP over TLS; SMTP for a HELO client.
    // RFC 6531 §4.3: UTF8SMTP(S) for a transaction with SMTPUTF8 (which
    // only an EHLO client can give).
    let protocol = match (env.esmtp, env.flags.smtputf8, env.tls.is_some()) {
        (true, true, true) => "UTF8SMTPS",
        (true, true, false) => "UTF8SMTP",
        (true, false, true) => "ESMTPS",
        (true, false, false) => "ESMTP",
        (false, _, true) => "SMTPS",
        (false, _, false) => "SMTP",
    };
    let mut h = String::with_capacity(256);
    match &env.peer {
        Some(peer) => {
            let helo = sanitize(&env.helo);
            let rdns = peer
                .name
                .as_deref()
                .map(sanitize)
                .unwrap_or_else(|| "unknown".into());
            let _ = write!(
                h,
                "Received: from {helo} ({rdns} [{ip}])\r\n\tby {by} (sealgate) with {protocol} id {queue_id}",
                ip = peer.ip,
                by = sanitize(by_host)
            );
        }
        // Made here (a DSN): no client, no protocol, as Postfix stamps
        // its own bounces.
        None => {
            let _ = write!(
                h,
                "Received: by {by} (sealgate) id {queue_id}",
                by = sanitize(by_host)
            );
        }
    }
    if let Some(tls) = &env.tls {
        let _ = write!(
            h,
            "\r\n\t(version={} cipher={} bits={} verify={})",
            tls.version,
            sanitize(&tls.cipher),
            tls.bits,
            tls.verify.as_str()
        );
    }
    // Like Postfix, name the recipient only when there is exactly one:
    // listing all would disclose the Bcc recipients to each other.
    // The domain goes in A-labels, so a message whose envelope is ASCII
    // but for its domains stays ASCII-only and can still go to a server
    // without SMTPUTF8 (RFC 6531 §3.2); only a UTF-8 local part (which
    // needs SMTPUTF8 anyway) brings UTF-8 into the field (RFC 6532 §3.2).
    if let [one] = env.recipients.as_slice() {
        let shown = match crate::model::ascii_address(&one.address) {
            Some(ascii) => sanitize(&ascii),
            None => header_text(&one.address, true),
        };
        let _ = write!(h, "\r\n\tfor <{shown}>");
    }
    let _ = write!(h, "; {}\r\n", rfc5322_date(at));
    h
}

/// Peer-supplied text goes into a header: keep printable ASCII except the
/// characters that would change the header's structure, replace the rest.
pub fn sanitize(s: &str) -> String {
    header_text(s, false)
}

/// [`sanitize`], and with `utf8` (an RFC 6532 field) non-ASCII
/// characters that are neither control nor space are kept too.
fn header_text(s: &str, utf8: bool) -> String {
    s.chars()
        .map(|c| match c {
            '(' | ')' | ';' | '\\' => '_',
            c if c.is_ascii_graphic() => c,
            c if utf8 && !c.is_ascii() && !c.is_control() && !c.is_whitespace() => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::server::{ClientVerify, Peer, TlsFacts};
    use std::time::UNIX_EPOCH;

    /// A client at 192.0.2.7 that said `helo` (EHLO) and sent from `from`
    /// to `rcpt`, in the clear.
    fn envelope(helo: &str, from: &str, rcpt: &str) -> Envelope {
        Envelope {
            from: from.into(),
            recipients: vec![rcpt.into()],
            helo: helo.into(),
            esmtp: true,
            flags: Default::default(),
            dsn: Default::default(),
            peer: Some(Peer {
                ip: "192.0.2.7".parse().unwrap(),
                port: 1234,
                name: None,
            }),
            tls: None,
        }
    }

    fn tls13() -> Option<TlsFacts> {
        Some(TlsFacts {
            version: "TLSv1.3",
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            bits: 256,
            verify: ClientVerify::No,
            client_cert: None,
        })
    }

    #[test]
    fn tls_details_and_sanitised_peer_text() {
        let mut env = envelope("evil\x1b[31m(x)", "a@b.example", "c@d.example");
        env.tls = tls13();
        let h = header(&env, "mx.example", "ABC", UNIX_EPOCH);
        assert!(h.starts_with("Received: from evil?[31m_x_ (unknown [192.0.2.7])\r\n\tby mx.example (sealgate) with ESMTPS id ABC\r\n"), "{h}");
        assert!(h.contains("(version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 bits=256 verify=NO)"));
        assert!(h.contains("for <c@d.example>; Thu, 01 Jan 1970"));
        assert!(h.ends_with("\r\n"));
    }

    /// RFC 6531 §4.3: a SMTPUTF8 transaction is stamped UTF8SMTP(S).
    #[test]
    fn smtputf8_transaction_is_stamped_utf8smtp() {
        let mut env = envelope(
            "client.example",
            "jörg@bücher.example",
            "élise@bücher.example",
        );
        env.flags.smtputf8 = true;
        let h = header(&env, "mx.example", "ABC", UNIX_EPOCH);
        assert!(h.contains("(sealgate) with UTF8SMTP id ABC"), "{h}");
        assert!(h.contains("for <élise@bücher.example>;"), "{h}");
        env.tls = tls13();
        let h = header(&env, "mx.example", "ABC", UNIX_EPOCH);
        assert!(h.contains("(sealgate) with UTF8SMTPS id ABC"), "{h}");
        env.flags.smtputf8 = false;
        let h = header(&env, "mx.example", "ABC", UNIX_EPOCH);
        assert!(h.contains("(sealgate) with ESMTPS id ABC"), "{h}");
        // An ASCII local part: the domain in A-labels, the field ASCII.
        env.recipients = vec!["u@bücher.example".into()];
        let h = header(&env, "mx.example", "ABC", UNIX_EPOCH);
        assert!(h.contains("for <u@xn--bcher-kva.example>;"), "{h}");
        assert!(h.is_ascii(), "{h}");
    }
}
