//! Delivery status notifications (RFC 3464), sent to the sender when a
//! recipient fails permanently or its message expires. Never for a message
//! with the null sender (RFC 5321 §4.5.5: no bounce for a bounce).

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::smtp::received::rfc5322_date;

/// One failed recipient for the report.
pub struct Failed<'a> {
    pub rcpt: &'a str,
    /// RFC 3463 status, `5.x.y`.
    pub status: &'a str,
    /// The remote reply or our reason.
    pub diagnostic: &'a str,
    pub remote: Option<&'a str>,
}

/// Builds the DSN message (headers and body, CRLF). The envelope is
/// `MAIL FROM:<>`, `RCPT TO:<sender>`.
pub fn build(
    hostname: &str,
    queue_id: &str,
    sender: &str,
    arrived: SystemTime,
    failed: &[Failed<'_>],
    original: &[u8],
    now: SystemTime,
) -> Vec<u8> {
    let boundary = format!(
        "{queue_id}.{}/{hostname}",
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let mut m = String::with_capacity(2048);
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at host {hostname}.\r\n\
         \r\n\
         Your message (queue id {queue_id}) could not be delivered to one or more\r\n\
         recipients. The mail system said:\r\n\
         \r\n",
        date = rfc5322_date(now),
    );
    for f in failed {
        let _ = write!(m, "<{}>: {}\r\n", f.rcpt, ascii(f.diagnostic));
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         X-Sealgate-Queue-ID: {queue_id}\r\n\
         Arrival-Date: {arrival}\r\n",
        arrival = rfc5322_date(arrived),
    );
    for f in failed {
        let _ = write!(
            m,
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.rcpt, f.status
        );
        if let Some(r) = f.remote {
            let _ = write!(m, "Remote-MTA: dns; {r}\r\n");
        }
        let _ = write!(m, "Diagnostic-Code: smtp; {}\r\n", ascii(f.diagnostic));
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: Undelivered Message Headers\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n"
    );
    let headers_end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(original.len(), |p| p + 2);
    let mut out = m.into_bytes();
    out.extend_from_slice(&original[..headers_end]);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
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

    #[test]
    fn report_has_the_rfc3464_parts() {
        let t = SystemTime::UNIX_EPOCH;
        let dsn = build(
            "mx.test",
            "QID",
            "a@b.test",
            t,
            &[Failed {
                rcpt: "x@r.test",
                status: "5.1.1",
                diagnostic: "550 5.1.1 no such user",
                remote: Some("mx.r.test"),
            }],
            b"Subject: hi\r\nFrom: a@b.test\r\n\r\nbody\r\n",
            t,
        );
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text
            .contains("Final-Recipient: rfc822; x@r.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
        assert!(text.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: a@b.test\r\n"
        ));
        assert!(!text.contains("body\r\n"), "only the headers are returned");
        assert!(text.ends_with("--\r\n"));
    }
}
