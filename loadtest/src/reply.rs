//! Reply parsing is sealgate's own (`sealgate::smtp::reply_parse`): the
//! generator reads replies exactly as the delivery agent does.

pub use sealgate::smtp::reply_parse::{parse, Parsed as Reply, ReplyError};
