//! The SMTP protocol, sans-IO: no sockets, no clock. Callers pass bytes and
//! `now`; the code returns replies, events and deadlines.

pub mod client;
pub mod command;
pub mod data;
pub mod received;
pub mod reply;
pub mod reply_parse;
pub mod server;

#[cfg(test)]
mod pair_tests;
