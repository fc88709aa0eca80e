//! The one table from a refused command to its reply: command syntax
//! errors and policy refusals, each with its RFC 3463 code.

use crate::policy::Refusal;
use crate::smtp::command::CommandError;
use crate::smtp::reply::{canned, Reply};

pub(super) fn command_error_reply(e: CommandError) -> Reply {
    match e {
        CommandError::Unrecognized => canned::unknown_command(),
        CommandError::Syntax(text) => Reply::new(501, "5.5.4", text),
        CommandError::BadSender => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        CommandError::BadRecipient => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
        CommandError::UnsupportedParameter => Reply::new(555, "5.5.4", "Unsupported parameter"),
        CommandError::NonAscii => Reply::new(500, "5.5.2", "Invalid characters in command"),
    }
}

pub fn refusal_reply(r: Refusal) -> Reply {
    match r {
        Refusal::RelayDenied => canned::relay_denied(),
        Refusal::TlsRequired => canned::must_starttls(),
        Refusal::CipherTooWeak { bits, min } => Reply::new(
            554,
            "5.7.0",
            format!("Cipher strength {bits} bits is below the {min} bits required by policy"),
        ),
        Refusal::ClientCertMissing => {
            Reply::new(554, "5.7.1", "Client certificate required by policy")
        }
        Refusal::ClientCertNotVerified(why) => Reply::new(
            554,
            "5.7.1",
            format!("Client certificate not trusted: {why}"),
        ),
        Refusal::ClientCertName(want) => Reply::new(
            554,
            "5.7.1",
            format!("Client certificate does not match {want}"),
        ),
        Refusal::ClientCertPin => Reply::new(
            554,
            "5.7.1",
            "Client certificate does not match a pinned fingerprint",
        ),
    }
}
