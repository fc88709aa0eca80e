//! The journal's byte format (docs/spool.md "Journal"): segment headers,
//! records and their payloads. Pure functions over byte slices; the
//! journal ([`super::journal`]) decides where they go.
//!
//! Every variable field is length-prefixed, so no address, HELO name or
//! reply text can break the framing, whatever octets it holds; recipients'
//! state changes name the recipient by its index in the message, never by
//! its address.

use std::net::IpAddr;

use super::{RcptState, RcptStatus};

/// First octets of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"SGJRNL01";
/// Octets reserved at the start of a segment for its header.
pub const SEGMENT_HEADER: usize = 64;
/// Octets of a record's fixed header: length, CRC-32C, generation, type,
/// queue-id length.
pub const RECORD_HEADER: usize = 14;
/// The end marker written after the last record of every batch.
pub const END_MARKER: [u8; 4] = [0; 4];

/// Record types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message = 1,
    Recipient = 2,
    Hold = 3,
    Release = 4,
    Done = 5,
}

impl Kind {
    fn of(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Message,
            2 => Kind::Recipient,
            3 => Kind::Hold,
            4 => Kind::Release,
            5 => Kind::Done,
            _ => return None,
        })
    }
}

/// The envelope facts kept with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Unix seconds.
    pub arrived: u64,
    /// Reverse-path without brackets; empty for `<>`.
    pub from: String,
    /// The SMTP client; `None` (written empty) for a message the gateway
    /// made itself.
    pub client: Option<IpAddr>,
    /// 0 with no client.
    pub client_port: u16,
    pub helo: String,
    /// `version cipher bits verify`, for a message that came over TLS.
    pub tls: Option<String>,
    pub flags: crate::model::MailFlags,
    /// RET and ENVID (RFC 3461), none in version-1 records.
    pub dsn: crate::model::MessageDsn,
}

/// Where a message's octets are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// In the record itself.
    Inline(&'a [u8]),
    /// `prefix` (sealgate's Received header) here, the data in a file of
    /// its own under the journal's `large/` directory, `len` octets with
    /// CRC-32C `crc`.
    External {
        prefix: &'a [u8],
        name: String,
        len: u64,
        crc: u32,
    },
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A message: its envelope, whether held, each recipient's state (all
    /// pending for a new message; the current ones for a copy carried
    /// forward) and its octets.
    Message {
        meta: Box<Meta>,
        hold: bool,
        rcpts: Vec<RcptState>,
        body: Body<'a>,
    },
    /// Recipient `index` of the message changed state.
    Recipient {
        index: u32,
        state: RcptState,
    },
    Hold,
    Release,
    /// Every recipient is final: the message's space is reclaimable.
    Done,
}

/// What lies at a position in a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A whole, checked record of `len` octets.
    Record {
        id: &'a str,
        record: Record<'a>,
        len: usize,
    },
    /// The end marker, zeros, or the remains of an earlier use of the
    /// segment (another generation): the clean end of the records.
    End,
    /// Octets of this generation that are not a whole record: a write torn
    /// by a crash, or damage.
    Torn(&'static str),
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// A segment header: magic, generation, CRC-32C of both; zero padded.
pub fn segment_header(generation: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The generation in a segment header, if it is one.
pub fn parse_segment_header(h: &[u8]) -> Option<u64> {
    if h.len() < SEGMENT_HEADER || &h[..8] != SEGMENT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(h[16..20].try_into().ok()?);
    if crc != crc32c::crc32c(&h[..16]) {
        return None;
    }
    Some(u64::from_le_bytes(h[8..16].try_into().ok()?))
}

/// Appends one record to `out`: the fixed header, the queue id, the
/// payload; `payload` writes the payload into the buffer it is given.
fn encode(
    out: &mut Vec<u8>,
    generation: u64,
    kind: Kind,
    id: &str,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    put_u32(out, generation as u32);
    out.push(kind as u8);
    let id = &id.as_bytes()[..id.len().min(255)];
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    payload(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A recipient's state: status (bit 7: a delay notification was sent),
/// attempts, next due time, last reply.
fn put_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
        None => out.push(0),
    }
}

fn put_state(out: &mut Vec<u8>, s: &RcptState) {
    let status = match s.status {
        RcptStatus::Pending => 0,
        RcptStatus::Delivered => 1,
        RcptStatus::Failed => 2,
    };
    out.push(status | u8::from(s.delay_notified) << 7);
    put_u32(out, s.attempts);
    put_u64(out, s.next_due);
    put_bytes(out, super::last_text(&s.last).as_bytes());
}

/// A MESSAGE record (each part of the message record is an argument:
/// the encoder is the format, in one place). `prefix` and `data` (for an inline body) are stored
/// one after the other: the Received header, then the message.
#[allow(clippy::too_many_arguments)]
pub fn message(
    out: &mut Vec<u8>,
    generation: u64,
    id: &str,
    meta: &Meta,
    hold: bool,
    rcpts: &[RcptState],
    body: &Body<'_>,
    prefix: &[u8],
) {
    encode(out, generation, Kind::Message, id, |p| {
        p.push(2); // payload version (1: without the DSN fields)
        put_u64(p, meta.arrived);
        put_bytes(p, meta.from.as_bytes());
        put_bytes(
            p,
            meta.client
                .map(|c| c.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        p.extend_from_slice(&meta.client_port.to_le_bytes());
        put_bytes(p, meta.helo.as_bytes());
        match &meta.tls {
            Some(t) => {
                p.push(1);
                put_bytes(p, t.as_bytes());
            }
            None => p.push(0),
        }
        p.push(meta.flags.to_byte());
        p.push(match meta.dsn.ret {
            None => 0,
            Some(crate::model::Ret::Full) => 1,
            Some(crate::model::Ret::Hdrs) => 2,
        });
        put_opt(p, meta.dsn.envid.as_deref().map(str::as_bytes));
        p.push(u8::from(hold));
        put_u32(p, rcpts.len() as u32);
        for r in rcpts {
            put_bytes(p, r.rcpt.as_bytes());
            put_state(p, r);
            p.push(r.dsn.notify.to_byte());
            match &r.dsn.orcpt {
                Some(o) => {
                    p.push(1);
                    put_bytes(p, o.kind.as_bytes());
                    put_bytes(p, o.address.as_bytes());
                }
                None => p.push(0),
            }
        }
        match body {
            Body::Inline(data) => {
                p.push(0);
                put_u32(p, (prefix.len() + data.len()) as u32);
                p.extend_from_slice(prefix);
                p.extend_from_slice(data);
            }
            Body::External {
                prefix,
                name,
                len,
                crc,
            } => {
                p.push(1);
                put_bytes(p, prefix);
                put_bytes(p, name.as_bytes());
                put_u64(p, *len);
                put_u32(p, *crc);
            }
        }
    });
}

/// A RECIPIENT state-change record.
pub fn recipient(out: &mut Vec<u8>, generation: u64, id: &str, index: u32, state: &RcptState) {
    encode(out, generation, Kind::Recipient, id, |p| {
        put_u32(p, index);
        put_state(p, state);
    });
}

/// A HOLD, RELEASE or DONE record (no payload).
pub fn mark(out: &mut Vec<u8>, generation: u64, id: &str, kind: Kind) {
    encode(out, generation, kind, id, |_| {});
}

/// Reads the record at the start of `at`, written in a segment of
/// generation `generation`.
pub fn decode(at: &[u8], generation: u64) -> Found<'_> {
    if at.len() < 4 {
        return Found::End;
    }
    let len = u32::from_le_bytes([at[0], at[1], at[2], at[3]]) as usize;
    if len == 0 {
        return Found::End;
    }
    if at.len() < RECORD_HEADER {
        return Found::Torn("record header cut short");
    }
    let gen = u32::from_le_bytes([at[8], at[9], at[10], at[11]]);
    if gen != generation as u32 {
        // What an earlier use of this segment left behind.
        return Found::End;
    }
    if len < RECORD_HEADER || len > at.len() {
        return Found::Torn("record length out of bounds");
    }
    let crc = u32::from_le_bytes([at[4], at[5], at[6], at[7]]);
    if crc != crc32c::crc32c(&at[8..len]) {
        return Found::Torn("CRC mismatch");
    }
    match parse(&at[12..len]) {
        Some((id, record)) => Found::Record { id, record, len },
        None => Found::Torn("record does not decode (CRC correct)"),
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        self.bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn opt_string(&mut self) -> Option<Option<String>> {
        Some(if self.bool()? {
            Some(self.string()?)
        } else {
            None
        })
    }
    fn state(&mut self, rcpt: String) -> Option<RcptState> {
        let b = self.u8()?;
        let status = match b & 0x7f {
            0 => RcptStatus::Pending,
            1 => RcptStatus::Delivered,
            2 => RcptStatus::Failed,
            _ => return None,
        };
        Some(RcptState {
            rcpt,
            dsn: crate::model::RcptDsn::default(),
            status,
            attempts: self.u32()?,
            next_due: self.u64()?,
            last: super::LastReply::from_text(&self.string()?),
            delay_notified: b & 0x80 != 0,
        })
    }
    /// NOTIFY and ORCPT of a recipient (version 2).
    fn rcpt_dsn(&mut self) -> Option<crate::model::RcptDsn> {
        let notify = crate::model::Notify::from_byte(self.u8()?)?;
        let orcpt = if self.bool()? {
            Some(crate::model::Orcpt {
                kind: self.string()?,
                address: self.string()?,
            })
        } else {
            None
        };
        Some(crate::model::RcptDsn { notify, orcpt })
    }
}

/// Type, queue id and payload (everything after the generation).
fn parse(b: &[u8]) -> Option<(&str, Record<'_>)> {
    let mut c = Cursor(b);
    let kind = Kind::of(c.u8()?)?;
    let id_len = c.u8()? as usize;
    let id = std::str::from_utf8(c.take(id_len)?).ok()?;
    let record = match kind {
        Kind::Message => {
            let version = c.u8()?;
            if !(1..=2).contains(&version) {
                return None;
            }
            let arrived = c.u64()?;
            let from = c.string()?;
            let client = match c.string()? {
                text if text.is_empty() => None,
                text => Some(text.parse().ok()?),
            };
            let client_port = c.u16()?;
            let helo = c.string()?;
            let tls = if c.bool()? { Some(c.string()?) } else { None };
            let flags = crate::model::MailFlags::from_byte(c.u8()?)?;
            let dsn = if version >= 2 {
                crate::model::MessageDsn {
                    ret: match c.u8()? {
                        0 => None,
                        1 => Some(crate::model::Ret::Full),
                        2 => Some(crate::model::Ret::Hdrs),
                        _ => return None,
                    },
                    envid: c.opt_string()?,
                }
            } else {
                crate::model::MessageDsn::default()
            };
            let hold = c.bool()?;
            let n = c.u32()? as usize;
            let mut rcpts = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let rcpt = c.string()?;
                let mut state = c.state(rcpt)?;
                if version >= 2 {
                    state.dsn = c.rcpt_dsn()?;
                }
                rcpts.push(state);
            }
            let body = match c.u8()? {
                0 => Body::Inline(c.bytes()?),
                1 => Body::External {
                    prefix: c.bytes()?,
                    name: c.string()?,
                    len: c.u64()?,
                    crc: c.u32()?,
                },
                _ => return None,
            };
            Record::Message {
                meta: Box::new(Meta {
                    arrived,
                    from,
                    client,
                    client_port,
                    helo,
                    tls,
                    flags,
                    dsn,
                }),
                hold,
                rcpts,
                body,
            }
        }
        Kind::Recipient => {
            let index = c.u32()?;
            let state = c.state(String::new())?;
            Record::Recipient { index, state }
        }
        Kind::Hold => Record::Hold,
        Kind::Release => Record::Release,
        Kind::Done => Record::Done,
    };
    if !c.0.is_empty() {
        return None;
    }
    Some((id, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            arrived: 1_795_805_192,
            from: "a@b.test".into(),
            client: Some("127.0.0.1".parse().unwrap()),
            client_port: 4000,
            helo: "client.test".into(),
            tls: Some("TLSv1.3 TLS13_AES_128_GCM_SHA256 128 NO".into()),
            flags: crate::model::MailFlags {
                body_8bit: true,
                tls: crate::model::TlsRequest::Required,
                tls_report: false,
                smtputf8: true,
            },
            dsn: crate::model::MessageDsn {
                ret: Some(crate::model::Ret::Hdrs),
                envid: Some("QQ+314 \u{e9}".into()),
            },
        }
    }

    fn state(rcpt: &str) -> RcptState {
        RcptState::fresh(&rcpt.into())
    }

    #[test]
    fn records_round_trip_whatever_their_fields_hold() {
        let mut out = Vec::new();
        // Spaces, quotes, CR LF and words the old .state format used.
        let mut rcpts = vec![
            state("\"a b\"@dest.test"),
            state("\"x delivered 1 2\"@dest.test"),
            state("\r\nrcpt z@y 0 0\n@d"),
        ];
        // RFC 3461 requests and a UTF-8 address travel with a recipient.
        rcpts[0].rcpt = "ü@bücher.test".into();
        rcpts[0].dsn = crate::model::RcptDsn {
            notify: crate::model::Notify::On {
                success: true,
                failure: false,
                delay: true,
            },
            orcpt: Some(crate::model::Orcpt {
                kind: "utf-8".into(),
                address: "ü@bücher.test".into(),
            }),
        };
        rcpts[2].dsn.notify = crate::model::Notify::Never;
        message(
            &mut out,
            7,
            "ID1",
            &meta(),
            false,
            &rcpts,
            &Body::Inline(b"body\r\n"),
            b"Received: x\r\n",
        );
        let mut delivered = rcpts[1].clone();
        delivered.status = RcptStatus::Delivered;
        delivered.last = super::super::LastReply::from_text("dsn=2.0.0 250 ok\r\nrcpt evil");
        delivered.delay_notified = true;
        recipient(&mut out, 7, "ID1", 1, &delivered);
        mark(&mut out, 7, "ID1", Kind::Done);
        out.extend_from_slice(&END_MARKER);

        let Found::Record { id, record, len } = decode(&out, 7) else {
            panic!()
        };
        assert_eq!(id, "ID1");
        let Record::Message {
            meta: m,
            rcpts: r,
            body,
            hold,
        } = record
        else {
            panic!()
        };
        assert_eq!(*m, meta());
        assert_eq!(r, rcpts);
        assert!(!hold);
        assert_eq!(body, Body::Inline(b"Received: x\r\nbody\r\n"));
        let rest = &out[len..];
        let Found::Record { record, len, .. } = decode(rest, 7) else {
            panic!()
        };
        // A state change names its recipient by index: address and DSN
        // request are the message record's.
        delivered.rcpt = String::new();
        delivered.dsn = Default::default();
        assert_eq!(
            record,
            Record::Recipient {
                index: 1,
                state: delivered
            }
        );
        let rest = &rest[len..];
        let Found::Record { record, len, .. } = decode(rest, 7) else {
            panic!()
        };
        assert_eq!(record, Record::Done);
        assert_eq!(decode(&rest[len..], 7), Found::End);
    }

    #[test]
    fn other_generations_end_and_torn_records_are_found() {
        let mut out = Vec::new();
        mark(&mut out, 3, "ID", Kind::Hold);
        assert!(matches!(decode(&out, 3), Found::Record { .. }));
        // Left over from the segment's previous use.
        assert_eq!(decode(&out, 4), Found::End);
        // Cut anywhere: never a record.
        for cut in 1..out.len() {
            assert!(
                !matches!(decode(&out[..cut], 3), Found::Record { .. }),
                "{cut}"
            );
        }
        // One flipped bit anywhere after the length: never a record.
        for i in 4..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(!matches!(decode(&bad, 3), Found::Record { .. }), "{i}");
        }
    }

    #[test]
    fn segment_headers_check_themselves() {
        let h = segment_header(42);
        assert_eq!(parse_segment_header(&h), Some(42));
        let mut bad = h;
        bad[9] ^= 1;
        assert_eq!(parse_segment_header(&bad), None);
        assert_eq!(parse_segment_header(&[0; SEGMENT_HEADER]), None);
    }
}
