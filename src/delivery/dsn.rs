//! Delivery status notifications (RFC 3464, IN-8) to the sender: a failure
//! (a recipient failed permanently or expired), a delay (RFC 3461
//! `NOTIFY=DELAY`, once per recipient) or a relay (`NOTIFY=SUCCESS` and
//! the next hop does not offer DSN, RFC 3461 §5.2.2.1). Never for a
//! message with the null sender (RFC 5321 §4.5.5: no bounce for a
//! bounce); what the recipients' NOTIFY allows is the queue's to decide.
//! An address with UTF-8 makes it an internationalised report (RFC 6533
//! §6: `message/global-delivery-status`).

use std::fmt::Write as _;
use std::time::SystemTime;

use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use crate::model::{rfc5322_date, MessageDsn, Orcpt, Ret};

/// RFC 3464 §2.3.3 `Action` of a recipient, as the gateway reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Relayed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient for the report.
pub struct Entry<'a> {
    pub rcpt: &'a str,
    pub orcpt: Option<&'a Orcpt>,
    pub action: Action,
    /// RFC 3463 status: `5.x.y` failed, `4.x.y` delayed, `2.x.y` relayed.
    pub status: crate::model::EnhancedStatus,
    /// The remote reply or our reason.
    pub diagnostic: &'a str,
    pub remote: Option<&'a str>,
}

/// What the report is about.
pub struct Report<'a> {
    pub hostname: &'a str,
    pub queue_id: &'a str,
    pub sender: &'a str,
    pub arrived: SystemTime,
    /// RET and ENVID of the message.
    pub dsn: &'a MessageDsn,
    /// Delayed recipients are retried until then (`Will-Retry-Until`).
    pub retry_until: SystemTime,
    pub entries: &'a [Entry<'a>],
    /// The message as spooled.
    pub original: &'a [u8],
    pub now: SystemTime,
}

impl Report<'_> {
    /// An address in the report needs UTF-8 (RFC 6533).
    pub fn international(&self) -> bool {
        !self.sender.is_ascii()
            || self
                .entries
                .iter()
                .any(|e| !e.rcpt.is_ascii() || e.orcpt.is_some_and(|o| !o.address.is_ascii()))
    }

    /// RFC 3461 §4.3: `RET=FULL` returns the whole message with a failure;
    /// anything else (HDRS, no RET, a delay or relay notice) the headers.
    pub fn returns_full(&self) -> bool {
        self.dsn.ret == Some(Ret::Full) && self.entries.iter().any(|e| e.action == Action::Failed)
    }
}

/// Builds the DSN message (headers and body, CRLF) with `mail-builder`.
/// The envelope is `MAIL FROM:<>`, `RCPT TO:<sender>`.
pub fn build(r: &Report<'_>) -> Vec<u8> {
    let hostname = r.hostname;
    let queue_id = r.queue_id;
    let any = |a: Action| r.entries.iter().any(|e| e.action == a);
    let (subject, said) = if any(Action::Failed) {
        (
            "Undelivered Mail Returned to Sender",
            "could not be delivered to one or more\r\nrecipients",
        )
    } else if any(Action::Delayed) {
        (
            "Delayed Mail (still being retried)",
            "has not yet been delivered to one or more\r\nrecipients",
        )
    } else {
        (
            "Successful Mail Delivery Report",
            "was relayed to one or more recipients' servers,\r\n\
             which send no delivery notifications of their own",
        )
    };
    let intl = r.international();
    // RFC 6533 §6.1-6.3: the internationalised report types, which may
    // carry UTF-8 as it is (8bit).
    let (status_type, headers_type, message_type, charset, encoding) = if intl {
        (
            "message/global-delivery-status",
            "message/global-headers",
            "message/global",
            "utf-8",
            "8bit",
        )
    } else {
        (
            "message/delivery-status",
            "text/rfc822-headers",
            "message/rfc822",
            "us-ascii",
            "7bit",
        )
    };
    let text = |s: &str| if intl { s.to_string() } else { ascii(s) };

    let mut notice = format!(
        "This is the mail system at host {hostname}.\r\n\
         \r\n\
         Your message (queue id {queue_id}) {said}. The mail system said:\r\n\
         \r\n"
    );
    for e in r.entries {
        let _ = write!(
            notice,
            "<{}>: {}: {}\r\n",
            text(e.rcpt),
            e.action.as_str(),
            text(e.diagnostic)
        );
    }
    if any(Action::Delayed) {
        let _ = write!(
            notice,
            "\r\nThe mail system will keep trying until {}.\r\n",
            rfc5322_date(r.retry_until)
        );
    }

    // RFC 3464 §2.2: the per-message fields, then a group per recipient.
    let mut status = format!("Reporting-MTA: dns; {hostname}\r\n");
    // RFC 3464 §2.2.1: the ENVID as the sender gave it (decoded).
    if let Some(envid) = &r.dsn.envid {
        let _ = write!(status, "Original-Envelope-Id: {}\r\n", text(envid));
    }
    let _ = write!(
        status,
        "X-Sealgate-Queue-ID: {queue_id}\r\n\
         Arrival-Date: {arrival}\r\n",
        arrival = rfc5322_date(r.arrived),
    );
    for e in r.entries {
        status.push_str("\r\n");
        // RFC 3464 §2.3.1: the ORCPT, address type and address.
        if let Some(o) = e.orcpt {
            let _ = write!(
                status,
                "Original-Recipient: {}; {}\r\n",
                o.kind,
                text(&o.address)
            );
        }
        // RFC 6533 §6.2: a UTF-8 address has the type utf-8.
        let kind = if e.rcpt.is_ascii() { "rfc822" } else { "utf-8" };
        let _ = write!(
            status,
            "Final-Recipient: {kind}; {}\r\nAction: {}\r\nStatus: {}\r\n",
            text(e.rcpt),
            e.action.as_str(),
            e.status
        );
        if let Some(remote) = e.remote {
            let _ = write!(status, "Remote-MTA: dns; {remote}\r\n");
        }
        let _ = write!(status, "Diagnostic-Code: smtp; {}\r\n", text(e.diagnostic));
        if e.action == Action::Delayed {
            let _ = write!(
                status,
                "Will-Retry-Until: {}\r\n",
                rfc5322_date(r.retry_until)
            );
        }
    }

    // RFC 3461 §4.3: the whole message or its headers. A message/* part
    // is never transfer-encoded (RFC 2046 §5.2.1): 8bit when it has
    // 8-bit octets.
    let full = r.returns_full();
    let (description, content_type) = if full {
        ("Undelivered Message", message_type)
    } else {
        ("Message Headers", headers_type)
    };
    let returned = if full {
        r.original
    } else {
        crate::smtp::headers::header_section(r.original)
    };
    let mut returned = returned.to_vec();
    if !returned.ends_with(b"\r\n") {
        returned.extend_from_slice(b"\r\n");
    }
    let returned_encoding = if returned.is_ascii() { "7bit" } else { "8bit" };

    let parts = vec![
        MimePart::new(
            ContentType::new("text/plain").attribute("charset", charset),
            BodyPart::Text(notice.into()),
        )
        .header("Content-Description", Raw::new("Notification"))
        .transfer_encoding(encoding),
        // Binary: the builder adds no charset to a report's fields.
        MimePart::new(
            ContentType::new(status_type),
            BodyPart::Binary(status.into_bytes().into()),
        )
        .header("Content-Description", Raw::new("Delivery report"))
        .transfer_encoding(encoding),
        MimePart::new(
            ContentType::new(content_type),
            BodyPart::Binary(returned.into()),
        )
        .header("Content-Description", Raw::new(description))
        .transfer_encoding(returned_encoding),
    ];
    MessageBuilder::new()
        .from(Address::new_address(
            Some("Mail Delivery System"),
            format!("MAILER-DAEMON@{hostname}"),
        ))
        // The sender as it gave it: raw, so that a UTF-8 address stays
        // UTF-8 (RFC 6532) rather than being encoded.
        .header("To", Raw::new(format!("<{}>", text(r.sender))))
        .subject(subject)
        .header("Date", Raw::new(rfc5322_date(r.now)))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .message_id(format!(
            "{queue_id}.{}.dsn@{hostname}",
            r.now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ))
        .body(MimePart::new(
            ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
            BodyPart::Multipart(parts),
        ))
        .write_to_vec()
        // Writing to a Vec does not fail.
        .unwrap_or_default()
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report<'a>(
        entries: &'a [Entry<'a>],
        dsn: &'a MessageDsn,
        sender: &'a str,
        original: &'a [u8],
    ) -> String {
        let t = SystemTime::UNIX_EPOCH;
        String::from_utf8(build(&Report {
            hostname: "mx.test",
            queue_id: "QID",
            sender,
            arrived: t,
            dsn,
            retry_until: t,
            entries,
            original,
            now: t,
        }))
        .unwrap()
    }

    const ORIGINAL: &[u8] = b"Subject: hi\r\nFrom: a@b.test\r\n\r\nbody\r\n";

    /// The report as an independent MIME parser reads it: the top-level
    /// type with its report-type, then each part's type and body.
    fn parts(text: &str) -> (String, Vec<(String, String)>) {
        use mail_parser::MimeHeaders;
        let m = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .expect("the report parses");
        let kind = |c: Option<&mail_parser::ContentType>| {
            c.map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
                .unwrap_or_default()
        };
        let ct = m.content_type();
        let top = format!(
            "{}; report-type={}",
            kind(ct),
            ct.and_then(|c| c.attribute("report-type")).unwrap_or("")
        );
        let parts = m.parts[1..]
            .iter()
            .map(|p| {
                (
                    kind(p.content_type()),
                    String::from_utf8_lossy(p.contents()).into_owned(),
                )
            })
            .collect();
        (top, parts)
    }

    #[test]
    fn report_has_the_rfc3464_parts() {
        let failed = [Entry {
            rcpt: "x@r.test",
            orcpt: None,
            action: Action::Failed,
            status: crate::model::EnhancedStatus::new(crate::model::StatusClass::Permanent, 1, 1),
            diagnostic: "550 5.1.1 no such user",
            remote: Some("mx.r.test"),
        }];
        let text = report(&failed, &MessageDsn::default(), "a@b.test", ORIGINAL);
        assert!(text.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
        let (top, parts) = parts(&text);
        assert_eq!(top, "multipart/report; report-type=delivery-status");
        let kinds: Vec<&str> = parts.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ],
            "{text}"
        );
        assert!(parts[0]
            .1
            .contains("<x@r.test>: failed: 550 5.1.1 no such user"));
        let status = &parts[1].1;
        assert!(status
            .contains("Final-Recipient: rfc822; x@r.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(status.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
        assert!(!status.contains("Original-Envelope-Id"));
        assert_eq!(
            parts[2].1, "Subject: hi\r\nFrom: a@b.test\r\n",
            "only the headers"
        );
        assert!(text.ends_with("--\r\n"));
    }

    /// RFC 3461 §4.3-4.4, RFC 3464 §2.2.1, §2.3.1: RET=FULL returns the
    /// message, ENVID and ORCPT come back as given.
    #[test]
    fn ret_full_envid_and_orcpt_are_honoured() {
        let orcpt = Orcpt {
            kind: "rfc822".into(),
            address: "first@y.test".into(),
        };
        let failed = [Entry {
            rcpt: "x@r.test",
            orcpt: Some(&orcpt),
            action: Action::Failed,
            status: crate::model::EnhancedStatus::new(crate::model::StatusClass::Permanent, 1, 1),
            diagnostic: "550 no",
            remote: None,
        }];
        let dsn = MessageDsn {
            ret: Some(Ret::Full),
            envid: Some("QQ 1+2".into()),
        };
        let text = report(&failed, &dsn, "a@b.test", ORIGINAL);
        let (_, parts) = parts(&text);
        assert!(parts[1].1.contains("Original-Envelope-Id: QQ 1+2\r\n"));
        assert!(parts[1].1.contains(
            "Original-Recipient: rfc822; first@y.test\r\nFinal-Recipient: rfc822; x@r.test\r\n"
        ));
        assert_eq!(parts[2].0, "message/rfc822");
        assert!(
            text.contains("\r\n\r\nSubject: hi\r\nFrom: a@b.test\r\n\r\nbody\r\n"),
            "the whole message, as it was: {text}"
        );
    }

    #[test]
    fn delay_and_relay_notices_say_what_happened() {
        let delayed = [Entry {
            rcpt: "x@r.test",
            orcpt: None,
            action: Action::Delayed,
            status: crate::model::EnhancedStatus::new(
                crate::model::StatusClass::PersistentTransient,
                4,
                1,
            ),
            diagnostic: "connection refused",
            remote: None,
        }];
        // RET=FULL is for failures only: a delay returns the headers.
        let full = MessageDsn {
            ret: Some(Ret::Full),
            envid: None,
        };
        let text = report(&delayed, &full, "a@b.test", ORIGINAL);
        assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
        let (_, p) = parts(&text);
        assert!(p[1].1.contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
        assert!(p[1].1.contains("Will-Retry-Until: "));
        assert_eq!(p[2].0, "text/rfc822-headers");
        let relayed = [Entry {
            rcpt: "x@r.test",
            orcpt: None,
            action: Action::Relayed,
            status: crate::model::EnhancedStatus::new(crate::model::StatusClass::Success, 0, 0),
            diagnostic: "250 2.0.0 Ok",
            remote: Some("mx.r.test"),
        }];
        let text = report(&relayed, &MessageDsn::default(), "a@b.test", ORIGINAL);
        assert!(text.contains("Subject: Successful Mail Delivery Report\r\n"));
        assert!(text.contains("Action: relayed\r\nStatus: 2.0.0\r\nRemote-MTA: dns; mx.r.test\r\n"));
    }

    /// RFC 6533 §6: a UTF-8 address makes it a global delivery status.
    #[test]
    fn utf8_addresses_make_an_international_report() {
        let failed = [Entry {
            rcpt: "ü@bücher.test",
            orcpt: None,
            action: Action::Failed,
            status: crate::model::EnhancedStatus::new(crate::model::StatusClass::Permanent, 6, 7),
            diagnostic: "no SMTPUTF8",
            remote: None,
        }];
        let text = report(&failed, &MessageDsn::default(), "é@x.test", ORIGINAL);
        assert!(text.contains("To: <é@x.test>\r\n"));
        let (_, p) = parts(&text);
        assert_eq!(p[1].0, "message/global-delivery-status");
        assert!(p[1].1.contains("Final-Recipient: utf-8; ü@bücher.test\r\n"));
        assert_eq!(p[2].0, "message/global-headers");
    }
}
