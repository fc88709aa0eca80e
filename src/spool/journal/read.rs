//! Reading a message record back: the inline octets, or the large file
//! checked against the record's length and CRC.

use std::io;

use super::record::{self, Body, Found, Record};
use super::{Location, Storage};

/// Reads and checks the message record at `location` and returns its
/// octets (from the large file when external).
pub fn read_body<S: Storage>(
    storage: &mut S,
    id: &str,
    location: Location,
    generation: u64,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; location.len as usize];
    let n = storage.read_at(location.slot, location.offset, &mut buf)?;
    buf.truncate(n);
    body_of(storage, id, &buf, Some(generation))
}

/// The octets of the message record in `buf` (`generation`: the
/// segment's, or `None` to take the record's own).
pub fn body_of<S: Storage>(
    storage: &mut S,
    id: &str,
    buf: &[u8],
    generation: Option<u64>,
) -> io::Result<Vec<u8>> {
    let generation = generation.unwrap_or_else(|| {
        buf.get(8..12).map_or(0, |g| {
            u64::from(u32::from_le_bytes([g[0], g[1], g[2], g[3]]))
        })
    });
    match record::decode(buf, generation) {
        Found::Record {
            id: found,
            record: Record::Message { body, .. },
            ..
        } if found == id => match body {
            Body::Inline(d) => Ok(d.to_vec()),
            Body::External {
                prefix,
                name,
                len,
                crc,
            } => {
                let data = storage.read_large(&name)?;
                if data.len() as u64 != len || crc32c::crc32c(&data) != crc {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{id}: large message file {name} is damaged"),
                    ));
                }
                let mut all = Vec::with_capacity(prefix.len() + data.len());
                all.extend_from_slice(prefix);
                all.extend_from_slice(&data);
                Ok(all)
            }
        },
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{id}: the journal record moved or is damaged"),
        )),
    }
}
