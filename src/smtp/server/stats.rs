//! What a session counts for its disconnect log line.

/// Counts for the disconnect log line (Postfix style: `ehlo=1 mail=1 …`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    pub commands: u32,
    pub messages: u32,
    pub errors: u32,
    /// Per verb, in Postfix's order: ehlo, helo, starttls, mail, rcpt,
    /// data, bdat, rset, noop, quit, other.
    pub verbs: [u32; 11],
}

const VERB_NAMES: [&str; 11] = [
    "ehlo", "helo", "starttls", "mail", "rcpt", "data", "bdat", "rset", "noop", "quit", "unknown",
];

impl SessionStats {
    /// Postfix's disconnect summary: `ehlo=1 starttls=1 mail=1 rcpt=1
    /// data=1 quit=1 commands=6`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (name, n) in VERB_NAMES.iter().zip(self.verbs) {
            if n > 0 {
                out.push_str(&format!("{name}={n} "));
            }
        }
        out.push_str(&format!("commands={}", self.commands));
        out
    }
}
