//! An inbound connection's TLS layer, on rustls's unbuffered API.
//!
//! Records are decrypted from the shard's read buffer, and everything the
//! connection sends (handshake flights, replies, alerts, `close_notify`)
//! is encoded straight into the connection's write buffer, behind any
//! cleartext still queued there (the `220` to STARTTLS). Between turns a
//! session keeps no TLS buffer of its own: only the octets of a record (or
//! a handshake message) not yet complete, and nothing once it is. The
//! buffered API kept a 4 KiB record reader per connection, whatever it
//! held — most of what an idle TLS session cost.

use std::sync::Arc;

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

pub struct Tls {
    conn: UnbufferedServerConnection,
    /// Received octets that do not yet make a whole record, or that
    /// belong to a handshake message still arriving; rustls has read them
    /// and expects them again, unchanged, in front of what comes next.
    partial: Vec<u8>,
}

/// What a pass over received records found, besides plaintext and the
/// records to send back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The client sent `close_notify`: it sends no more.
    pub peer_closed: bool,
}

/// What to encrypt once the connection may send application data.
#[derive(Clone, Copy)]
enum Send<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Result<Tls, rustls::Error> {
        Ok(Tls {
            conn: UnbufferedServerConnection::new(config)?,
            partial: Vec::new(),
        })
    }

    /// What the handshake negotiated (version, suite, group, the client's
    /// certificate), for the log and the session.
    pub fn state(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// Octets held for an incomplete record.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.partial.capacity()
    }

    /// Takes records from the socket: their plaintext is appended to
    /// `plain`, and what the handshake answers (or the alert that ends
    /// it, on an error) to `out`.
    pub fn receive(
        &mut self,
        records: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Received, rustls::Error> {
        if self.partial.is_empty() {
            // The usual case: whole records in one read, decrypted where
            // they lie, nothing copied for rustls.
            let (used, result) = drive(&mut self.conn, records, plain, out, Send::Nothing);
            if result.is_ok() && used < records.len() {
                self.partial.extend_from_slice(&records[used..]);
            }
            result
        } else {
            self.partial.extend_from_slice(records);
            let (used, result) =
                drive(&mut self.conn, &mut self.partial, plain, out, Send::Nothing);
            self.partial.drain(..used);
            if self.partial.is_empty() {
                self.partial = Vec::new();
            }
            result
        }
    }

    /// Encrypts application data into `out`. Nothing is sent while the
    /// handshake is under way (the session says nothing then).
    pub fn send(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), rustls::Error> {
        self.drive_partial(out, Send::Data(data))
    }

    /// RFC 8446 §6.1: `close_notify` before the write side closes, so the
    /// client can tell the end from a truncation. Once only, however often
    /// it is asked for; nothing mid-handshake.
    pub fn close(&mut self, out: &mut Vec<u8>) -> Result<(), rustls::Error> {
        self.drive_partial(out, Send::CloseNotify)
    }

    /// Sending goes through the state machine too; the partial record
    /// goes with it so that rustls sees its input as it left it.
    fn drive_partial(&mut self, out: &mut Vec<u8>, send: Send<'_>) -> Result<(), rustls::Error> {
        let mut none = Vec::new();
        let (used, result) = drive(&mut self.conn, &mut self.partial, &mut none, out, send);
        self.partial.drain(..used);
        result.map(|_| ())
    }
}

/// Runs rustls's state machine over `input` until it needs more input or
/// has nothing more to say; returns how many octets of `input` it is done
/// with.
fn drive(
    conn: &mut UnbufferedServerConnection,
    input: &mut [u8],
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
    send: Send<'_>,
) -> (usize, Result<Received, rustls::Error>) {
    let mut used = 0;
    let mut received = Received::default();
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut input[used..]);
        let mut done = false;
        let step = match state {
            Err(e) => Err(e),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut extra = 0;
                let mut failed = None;
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            plain.extend_from_slice(record.payload);
                            extra += record.discard;
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                failed.map_or(Ok(extra), Err)
            }
            // 0-RTT is not offered (the server config's early data size
            // is 0), so there is none to take; drop any all the same.
            Ok(ConnectionState::ReadEarlyData(mut early)) => {
                let mut extra = 0;
                while let Some(Ok(record)) = early.next_record() {
                    extra += record.discard;
                }
                Ok(extra)
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                append(out, |room| encoded(encode.encode(room))).map(|()| 0)
            }
            // The records are in `out`, in order, and the connection's
            // flush writes them; to rustls they are sent.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Ok(0)
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                // Handshake done and no whole record left in `input`.
                done = true;
                let step = match send {
                    Send::Nothing => Ok(()),
                    Send::Data(data) => append(out, |room| encrypted(traffic.encrypt(data, room))),
                    Send::CloseNotify => {
                        append(out, |room| encrypted(traffic.queue_close_notify(room)))
                    }
                };
                step.map(|()| 0)
            }
            Ok(ConnectionState::PeerClosed) => {
                received.peer_closed = true;
                Ok(0)
            }
            // Mid-handshake with no whole record left, or closed both ways.
            Ok(ConnectionState::BlockedHandshake | ConnectionState::Closed) => {
                done = true;
                Ok(0)
            }
            // `ConnectionState` is non_exhaustive: a state added by a
            // later rustls stops the pass rather than spinning on it.
            Ok(_) => {
                done = true;
                Ok(0)
            }
        };
        match step {
            Ok(extra) => used += discard + extra,
            Err(e) => {
                used += discard;
                alert(conn, out);
                return (used, Err(e));
            }
        }
        if done {
            return (used, Ok(received));
        }
    }
}

/// After an error: the alert rustls queued (RFC 8446 §6.2), so the
/// client learns why.
fn alert(conn: &mut UnbufferedServerConnection, out: &mut Vec<u8>) {
    loop {
        let status = conn.process_tls_records(&mut []);
        match status.state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                if append(out, |room| encoded(encode.encode(room))).is_err() {
                    return;
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                while traffic.next_record().is_some() {}
            }
            // Nothing more queued.
            Err(_)
            | Ok(
                ConnectionState::ReadEarlyData(_)
                | ConnectionState::WriteTraffic(_)
                | ConnectionState::PeerClosed
                | ConnectionState::BlockedHandshake
                | ConnectionState::Closed,
            ) => return,
            // Non_exhaustive: a state a later rustls adds ends it too.
            Ok(_) => return,
        }
    }
}

/// Why a write into `out` did not happen.
enum Short {
    /// The room was too small; rustls needs this much.
    Needs(usize),
    Failed(rustls::Error),
}

fn encoded(r: Result<usize, EncodeError>) -> Result<usize, Short> {
    match r {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(s)) => Err(Short::Needs(s.required_size)),
        // Each EncodeTlsData is encoded once, here.
        Err(EncodeError::AlreadyEncoded) => Err(Short::Failed(rustls::Error::General(
            "TLS record encoded twice".into(),
        ))),
    }
}

fn encrypted(r: Result<usize, EncryptError>) -> Result<usize, Short> {
    match r {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(s)) => Err(Short::Needs(s.required_size)),
        Err(EncryptError::EncryptExhausted) => Err(Short::Failed(rustls::Error::EncryptError)),
    }
}

/// Lets rustls write at the end of `out`: it is first asked with no room,
/// which tells the size it needs (rustls leaves the buffer untouched when
/// it is too small), then given exactly that.
fn append(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Short>,
) -> Result<(), rustls::Error> {
    let need = match write(&mut []) {
        Ok(_) => return Ok(()),
        Err(Short::Needs(n)) => n,
        Err(Short::Failed(e)) => return Err(e),
    };
    let start = out.len();
    out.resize(start + need, 0);
    match write(&mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(short) => {
            out.truncate(start);
            Err(match short {
                Short::Needs(n) => rustls::Error::General(format!(
                    "TLS record needs {n} octets after {need} were given"
                )),
                Short::Failed(e) => e,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::io::{Read, Write};

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server = crate::tls::server_config(
            crate::tls::CertAndKey {
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            },
            std::path::Path::new("test"),
        )
        .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    fn client_output(client: &mut ClientConnection) -> Vec<u8> {
        let mut v = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut v).unwrap();
        }
        v
    }

    fn to_client(client: &mut ClientConnection, mut records: &[u8]) {
        while !records.is_empty() {
            client.read_tls(&mut records).unwrap();
            client.process_new_packets().unwrap();
        }
    }

    /// Feeds the server `bytes` in pieces of `step` octets (1 = every
    /// octet boundary); returns the plaintext and what it answered.
    fn feed(server: &mut Tls, bytes: &[u8], step: usize) -> (Vec<u8>, Vec<u8>, Received) {
        let (mut plain, mut out, mut seen) = (Vec::new(), Vec::new(), Received::default());
        for piece in bytes.chunks(step) {
            let mut piece = piece.to_vec();
            let r = server.receive(&mut piece, &mut plain, &mut out).unwrap();
            seen.peer_closed |= r.peer_closed;
        }
        (plain, out, seen)
    }

    /// A whole session (handshake, a command each way, close_notify each
    /// way) with the client's records split at every octet, in pairs and
    /// whole: the server reassembles them, and between flights holds no
    /// buffer.
    #[test]
    fn records_split_anywhere_and_nothing_held_between_flights() {
        let (server_config, client_config) = configs();
        for step in [1, 2, 7, usize::MAX] {
            let mut client = ClientConnection::new(
                client_config.clone(),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut server = Tls::new(server_config.clone()).unwrap();
            let hello = client_output(&mut client);
            let (plain, flight, _) = feed(&mut server, &hello, step.min(hello.len()));
            assert!(plain.is_empty() && !flight.is_empty(), "step {step}");
            assert_eq!(
                server.held(),
                0,
                "step {step}: nothing held after the ClientHello"
            );
            to_client(&mut client, &flight);
            assert!(!client.is_handshaking());
            client
                .writer()
                .write_all(b"EHLO client.example\r\n")
                .unwrap();
            let finished = client_output(&mut client);
            let (plain, tickets, _) = feed(&mut server, &finished, step.min(finished.len()));
            assert!(!server.state().is_handshaking(), "step {step}");
            assert_eq!(plain, b"EHLO client.example\r\n", "step {step}");
            assert_eq!(server.held(), 0, "step {step}");
            to_client(&mut client, &tickets);

            let mut reply = Vec::new();
            server.send(b"250 gateway.example\r\n", &mut reply).unwrap();
            server.close(&mut reply).unwrap();
            server.close(&mut reply).unwrap();
            to_client(&mut client, &reply);
            let mut got = Vec::new();
            assert_eq!(
                client.reader().read_to_end(&mut got).unwrap(),
                21,
                "then close_notify, once"
            );
            assert_eq!(got, b"250 gateway.example\r\n");

            client.send_close_notify();
            let bye = client_output(&mut client);
            let (_, _, seen) = feed(&mut server, &bye, step.min(bye.len()));
            assert!(seen.peer_closed, "step {step}");
        }
    }

    /// A record that is not TLS: an error, and the alert goes out.
    #[test]
    fn garbage_gets_an_alert() {
        let (server_config, _) = configs();
        let mut server = Tls::new(server_config).unwrap();
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let mut junk = b"GET / HTTP/1.0\r\n\r\n".to_vec();
        assert!(server.receive(&mut junk, &mut plain, &mut out).is_err());
        assert_eq!(out.first(), Some(&21), "an alert record: {out:?}");
    }
}
