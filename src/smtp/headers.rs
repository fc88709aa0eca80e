//! Reading the header section of a message (RFC 5322 §2.2): the fields
//! the gateway acts on, without parsing MIME.

/// The header fields of `message`, up to the blank line that ends them:
/// (name, value) with folding undone (RFC 5322 §2.2.3) and the value
/// trimmed. A line that is neither a field nor a continuation ends the
/// section (the message has no well-formed header after it).
pub fn fields(message: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match out.last_mut() {
                Some((_, value)) => value.extend_from_slice(line),
                None => break,
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        out.push((&line[..colon], line[colon + 1..].to_vec()));
    }
    for (_, value) in &mut out {
        let trimmed = value.trim_ascii().to_vec();
        *value = trimmed;
    }
    out
}

/// The header section (up to the blank line) is ASCII: it can go to a
/// server without SMTPUTF8 (RFC 6532 §3.2 puts UTF-8 in headers only
/// under SMTPUTF8).
pub fn header_is_ascii(message: &[u8]) -> bool {
    header_section(message).is_ascii()
}

/// The header section with the CRLF of its last field, without the
/// blank line (the whole message when it has no body).
pub fn header_section(message: &[u8]) -> &[u8] {
    let end = memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |p| p + 2);
    &message[..end]
}

/// RFC 8689 §5: the message carries `TLS-Required: No` (the field's one
/// defined value, case-insensitive): the sender asks that the recipients'
/// TLS policies not stop its delivery.
pub fn tls_required_no(message: &[u8]) -> bool {
    fields(message).iter().any(|(name, value)| {
        name.trim_ascii().eq_ignore_ascii_case(b"TLS-Required") && value.eq_ignore_ascii_case(b"No")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_required_no_is_found_in_the_header_only() {
        assert!(tls_required_no(
            b"Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n"
        ));
        assert!(tls_required_no(b"tls-required:   no  \r\n\r\n"));
        // Folded.
        assert!(tls_required_no(b"TLS-Required:\r\n No\r\n\r\n"));
        assert!(!tls_required_no(b"TLS-Required: Yes\r\n\r\n"));
        assert!(!tls_required_no(b"Subject: x\r\n\r\nTLS-Required: No\r\n"));
        assert!(!tls_required_no(b"X-TLS-Required: No\r\n\r\n"));
    }

    #[test]
    fn fields_unfold_and_stop_at_the_blank_line() {
        let f = fields(b"A: 1\r\n 2\r\nB:3\r\n\r\nC: 4\r\n");
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], (&b"A"[..], b"1 2".to_vec()));
        assert_eq!(f[1], (&b"B"[..], b"3".to_vec()));
    }
}
