//! The SMTP protocol, sans-IO: no sockets, no clock. Callers pass bytes and
//! `now`; the code returns replies, events and deadlines.

pub mod client;
pub mod command;
pub mod data;
pub mod failure;
pub mod headers;
pub mod received;
pub mod reply;
pub mod reply_parse;
pub mod server;

use std::time::Instant;

/// The result of one [`Endpoint::feed`] call: how much input was consumed
/// and, when the glue must act before feeding more, the action.
#[derive(Debug)]
pub struct Fed<A> {
    pub consumed: usize,
    pub action: Option<A>,
}

/// The shape both sessions share (after quinn-proto's `Connection`): the
/// glue feeds what it read with the time, sends what [`poll_output`]
/// gives, wakes the session at [`poll_timeout`] with [`handle_timeout`],
/// and drains [`poll_event`] for what happened. An action returned by
/// [`feed`] or [`handle_timeout`] is work the glue must do before feeding
/// more (a TLS handshake, storing a message, closing); an event is news
/// that asks nothing of it (a refused command, a finished message).
///
/// [`poll_output`]: Endpoint::poll_output
/// [`poll_timeout`]: Endpoint::poll_timeout
/// [`handle_timeout`]: Endpoint::handle_timeout
/// [`poll_event`]: Endpoint::poll_event
/// [`feed`]: Endpoint::feed
pub trait Endpoint {
    type Action;
    type Event;
    /// Feeds plaintext input read from the peer.
    fn feed(&mut self, input: &[u8], now: Instant) -> Fed<Self::Action>;
    /// Moves the bytes to send to the peer onto `into`.
    fn poll_output(&mut self, into: &mut Vec<u8>);
    /// When [`Endpoint::handle_timeout`] is due; `None` while the session
    /// waits on the glue or is closed.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The deadline has passed: the session ends (RFC 5321 §4.5.3.2) with
    /// the returned action. Glue calls [`Endpoint::handle_timeout`].
    fn expire(&mut self) -> Self::Action;
    /// The time is `now`: a deadline that has passed ends the session
    /// with the returned action; before it, nothing.
    fn handle_timeout(&mut self, now: Instant) -> Option<Self::Action> {
        match self.poll_timeout() {
            Some(due) if due <= now => Some(self.expire()),
            _ => None,
        }
    }
    /// The next thing that happened, oldest first.
    fn poll_event(&mut self) -> Option<Self::Event>;
}

#[cfg(test)]
mod pair_tests;
