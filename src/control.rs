//! The control socket's protocol (`SPOOL/sealgate.ctl`, mode 0600): what
//! `sealgate reload`, `queue`, `policy`, `partners` and `report tls --send`
//! ask of the running gateway. One request per connection, one answer,
//! each a line of JSON with the protocol's version: typed both ways, so
//! nothing is parsed back out of prose. A request of another version is
//! refused with both versions named.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::delivery::{Admin, AdminError, Answer};
use crate::status::Status;

/// The protocol's version; a gateway answers only its own.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Re-read the configuration (as SIGHUP does) and say how it went.
    Reload,
    /// The status page's view (`sealgate partners`).
    Partners,
    /// Order the ACME certificate now (`sealgate acme renew`).
    AcmeRenew,
    /// Roll the ACME certificate's key (`sealgate acme roll`).
    AcmeRoll,
    /// A command delivery answers.
    Delivery(Admin),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub result: Result<Reply, Refusal>,
}

/// What a command came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The reload's notes (keys that need a restart) and its last line.
    Reloaded(Vec<String>),
    Partners(Box<Status>),
    Delivery(Answer),
    /// The ACME order's outcome, as logged.
    Acme(String),
}

/// Why the gateway did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The new configuration has errors (each a line, with file, line
    /// and key); the running one stays.
    #[error("{}", .0.join("\n"))]
    ReloadFailed(Vec<String>),
    #[error("{0}")]
    Delivery(AdminError),
    /// The ACME order failed, or there is no `[acme]`.
    #[error("{0}")]
    Acme(String),
    #[error("the gateway speaks control protocol version {ours}; this command version {theirs}: use the sealgate binary of the running gateway")]
    Version { ours: u32, theirs: u32 },
    #[error("the gateway could not read the request: {0}")]
    BadRequest(String),
}

/// Why a command got no answer from the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{socket}: cannot reach the running gateway: {error}")]
    Unreachable {
        socket: String,
        error: std::io::Error,
    },
    #[error("lost the connection to the gateway: {0}")]
    Lost(std::io::Error),
    #[error("the gateway's answer could not be read: {0}")]
    Garbled(serde_json::Error),
    #[error("{0}")]
    Refused(Refusal),
}

/// Asks the gateway whose control socket is `socket`.
pub fn ask(socket: &Path, command: Command) -> Result<Reply, Failure> {
    let mut stream = UnixStream::connect(socket).map_err(|error| Failure::Unreachable {
        socket: socket.display().to_string(),
        error,
    })?;
    let request = Request {
        version: VERSION,
        command,
    };
    let mut line = serde_json::to_string(&request).map_err(Failure::Garbled)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(Failure::Lost)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(Failure::Lost)?;
    if answer.is_empty() {
        return Err(Failure::Lost(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let response: Response = serde_json::from_str(&answer).map_err(Failure::Garbled)?;
    response.result.map_err(Failure::Refused)
}

/// Serves one connection: reads its request, answers with `handle`'s
/// result.
pub fn serve(stream: &UnixStream, handle: impl FnOnce(Command) -> Result<Reply, Refusal>) {
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() {
        return;
    }
    let result = match serde_json::from_str::<Request>(&line) {
        Ok(r) if r.version == VERSION => handle(r.command),
        Ok(r) => Err(Refusal::Version {
            ours: VERSION,
            theirs: r.version,
        }),
        Err(e) => Err(Refusal::BadRequest(e.to_string())),
    };
    let response = Response {
        version: VERSION,
        result,
    };
    // A response always serialises (its parts are plain data).
    let mut text = serde_json::to_string(&response).unwrap_or_default();
    text.push('\n');
    let mut w = stream;
    let _ = w.write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let r = Request {
            version: VERSION,
            command: Command::Delivery(Admin::Change(crate::delivery::QueueChange::Hold(
                "ID1".into(),
            ))),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let a = Response {
            version: VERSION,
            result: Err(Refusal::Delivery(AdminError::Busy("ID1".into()))),
        };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), a);
    }

    #[test]
    fn another_version_is_refused_with_both_named() {
        let (a, b) = UnixStream::pair().unwrap();
        let client = std::thread::spawn(move || {
            let mut w = &a;
            w.write_all(b"{\"version\":7,\"command\":\"reload\"}\n")
                .unwrap();
            let mut line = String::new();
            BufReader::new(&a).read_line(&mut line).unwrap();
            serde_json::from_str::<Response>(&line).unwrap()
        });
        serve(&b, |_| {
            unreachable!("a request of another version is not handled")
        });
        let response = client.join().unwrap();
        let refusal = response.result.unwrap_err();
        assert_eq!(refusal, Refusal::Version { ours: 1, theirs: 7 });
        assert!(refusal.to_string().contains("version 1"), "{refusal}");
    }
}
