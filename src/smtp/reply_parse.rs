//! Incremental parsing of SMTP replies (RFC 5321 §4.2), for the client
//! side: the delivery agent and the load generator. A reply is one or more
//! lines `ddd-text` ending with a line `ddd text`.

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub code: u16,
    /// The text of the last line (without code and separator).
    pub text: String,
    /// Every line's text, in order.
    pub lines: Vec<String>,
}

impl Parsed {
    /// The RFC 3463 enhanced status code at the start of the text, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split(' ').next()?;
        let parts: Vec<&str> = first.split('.').collect();
        (parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then_some(first)
    }

    /// The reply on one line, for logs and bounces: `550 5.1.1 No such user`.
    pub fn one_line(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }
}

/// Why the bytes are not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line that does not start with three digits and ` `/`-`.
    #[error("not an SMTP reply line: {0}")]
    Malformed(String),
    /// A continuation line with another code than the first line.
    #[error("a continuation line with another reply code: {0}")]
    MixedCodes(String),
    /// A reply line over [`LINE_CAP`].
    #[error("a reply line over {LINE_CAP} octets")]
    TooLong,
}

/// The longest reply line accepted, line end included. RFC 5321
/// §4.5.3.1.5 allows 512 octets; as Postfix (`line_length_limit`), a client
/// tolerates servers that exceed it a little, but not without bound. The
/// cap applies to a line however it arrives: whole in one read or in
/// pieces (a bound checked only on partial lines would make the verdict
/// depend on how the network cut the bytes).
pub const LINE_CAP: usize = 2048;

/// Takes the first complete reply from `buf`: `Ok(Some((reply, consumed)))`,
/// `Ok(None)` when more input is needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Parsed, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            // Without its LF yet, the line is already at least this long + 1.
            if rest.len() >= LINE_CAP {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        if lf + 1 > LINE_CAP {
            return Err(ReplyError::TooLong);
        }
        let raw = &rest[..lf];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += lf + 1;
        let text = String::from_utf8_lossy(line);
        let bytes = line;
        let digits = bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit);
        let sep = bytes.get(3).copied();
        if !digits || !matches!(sep, None | Some(b' ') | Some(b'-')) {
            return Err(ReplyError::Malformed(text.into_owned()));
        }
        let this: u16 = text[..3]
            .parse()
            .map_err(|_| ReplyError::Malformed(text.to_string()))?;
        if *code.get_or_insert(this) != this {
            return Err(ReplyError::MixedCodes(text.into_owned()));
        }
        lines.push(text.get(4..).unwrap_or("").to_string());
        if sep != Some(b'-') {
            let text = lines.last().cloned().unwrap_or_default();
            return Ok(Some((
                Parsed {
                    code: this,
                    text,
                    lines,
                },
                pos,
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line_replies() {
        let (r, n) = parse(b"220 mx ESMTP\r\nrest").unwrap().unwrap();
        assert_eq!((r.code, r.text.as_str(), n), (220, "mx ESMTP", 14));
        let ehlo = b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
        let (r, n) = parse(ehlo).unwrap().unwrap();
        assert_eq!(r.lines, vec!["mx", "PIPELINING", "STARTTLS"]);
        assert_eq!(n, ehlo.len());
        // Every proper prefix needs more input.
        for cut in 0..ehlo.len() {
            assert_eq!(parse(&ehlo[..cut]).unwrap(), None, "prefix {cut}");
        }
        // A bare code with no text, LF only.
        assert_eq!(parse(b"354\n").unwrap().unwrap().0.code, 354);
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(matches!(parse(b"hello\r\n"), Err(ReplyError::Malformed(_))));
        assert!(matches!(
            parse(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::MixedCodes(_))
        ));
        // Over the cap, whether or not the line end has arrived.
        let long = [b"250 ".to_vec(), vec![b'z'; LINE_CAP - 6], b"\r\n".to_vec()].concat();
        assert_eq!(long.len(), LINE_CAP);
        assert!(parse(&long).unwrap().is_some(), "at the cap");
        let over = [b"250 ".to_vec(), vec![b'z'; LINE_CAP - 5], b"\r\n".to_vec()].concat();
        assert_eq!(parse(&over), Err(ReplyError::TooLong));
        for cut in 0..over.len() {
            let verdict = parse(&over[..cut]);
            assert!(
                verdict == Ok(None) || verdict == Err(ReplyError::TooLong),
                "prefix {cut}"
            );
        }
        assert_eq!(parse(&over[..LINE_CAP]), Err(ReplyError::TooLong));
    }
}
