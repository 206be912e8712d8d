//! The one place events become bytes and back.
//!
//! Frame: `b"HE"` magic, schema version as `u16` little-endian, then the bincode 2
//! (standard config) encoding of [`Event`]. Decoding dispatches on the version so that
//! frames written by older releases keep decoding (upcast to the current types):
//! version 1 through [`crate::v1`].

use crate::Event;
use thiserror::Error;

const MAGIC: &[u8; 2] = b"HE";
/// Version written by this build.
pub const SCHEMA_VERSION: u16 = 2;
const HEADER_LEN: usize = 4;

/// Why a frame could not be decoded. A consumer treats every variant as a poison record:
/// it is logged, counted and skipped, never retried (retrying cannot make it decode).
#[derive(Debug, Error)]
pub enum CodecError {
    #[error("frame too short ({0} bytes)")]
    Truncated(usize),
    #[error("bad magic {0:02x?}: not a Herald event")]
    BadMagic([u8; 2]),
    #[error("schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    UnknownVersion(u16),
    #[error("bincode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the event")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `event` in the current schema version.
pub fn encode(event: &Event) -> Vec<u8> {
    // Most events (an engagement event with its client's user agent, an attempt with its
    // reply) are 250-500 bytes: one allocation, not a second one and a copy.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    bincode::encode_into_std_write(event, &mut out, config()).expect("writing to a Vec cannot fail");
    out
}

/// Decodes a frame of any supported schema version into the current types.
pub fn decode(frame: &[u8]) -> Result<Event, CodecError> {
    if frame.len() < HEADER_LEN {
        return Err(CodecError::Truncated(frame.len()));
    }
    if &frame[..2] != MAGIC {
        return Err(CodecError::BadMagic([frame[0], frame[1]]));
    }
    let version = u16::from_le_bytes([frame[2], frame[3]]);
    let payload = &frame[HEADER_LEN..];
    match version {
        1 => Ok(whole::<crate::v1::Event>(payload)?.into()),
        2 => whole::<Event>(payload),
        v => Err(CodecError::UnknownVersion(v)),
    }
}

/// Decodes `payload` as one `T` with nothing after it.
fn whole<T: bincode::Decode<()>>(payload: &[u8]) -> Result<T, CodecError> {
    let (value, used): (T, usize) = bincode::decode_from_slice(payload, config())?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(value)
}
