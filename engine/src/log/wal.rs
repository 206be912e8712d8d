//! The embedded log's write-ahead file. Each group commit is one frame, appended and
//! `fdatasync`ed before the group's redb transaction is committed (without its own fsync)
//! and before any caller is answered. A checkpoint (a durable redb commit) makes everything
//! before it durable in redb; the file is then emptied and its generation bumped. At open,
//! the frames of the current generation are replayed into redb: whatever redb lost in a
//! crash since its last durable commit, and nothing else.
//!
//! Frame: `HWAL`, generation (u64 LE), payload length (u32 LE), CRC-32 of the payload
//! (u32 LE), payload. Reading stops at the first frame that is short, of another
//! generation or fails its CRC: a torn tail is a group that was never acknowledged.
//!
//! Payload: entries, each `1` topic partition offset stored-bytes (a record) or `2` group
//! topic partition offset (a consumer offset); strings and byte strings are length-prefixed.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 4] = b"HWAL";
const HEADER: usize = 4 + 8 + 4 + 4;

pub struct Wal {
    file: File,
    len: u64,
    generation: u64,
}

/// One replayed entry.
#[derive(Debug, PartialEq)]
pub enum Entry {
    Record { topic: String, partition: u32, offset: u64, stored: Vec<u8> },
    Offset { group: String, topic: String, partition: u32, offset: u64 },
}

impl Wal {
    /// Opens (or creates) the file; returns it with the entries of `generation`'s frames.
    pub fn open(path: &Path, generation: u64) -> io::Result<(Wal, Vec<Entry>)> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries = Vec::new();
        let mut at = 0;
        while let Some((payload, next)) = frame(&bytes, at, generation) {
            match parse(payload) {
                Some(mut e) => entries.append(&mut e),
                None => break,
            }
            at = next;
        }
        Ok((Wal { file, len: bytes.len() as u64, generation }, entries))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one frame and waits until it is on disk. On failure the file is cut back
    /// to where it was, so a later frame never follows a torn one.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(MAGIC);
        frame.extend_from_slice(&self.generation.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        let written = self.file.write_all_at(&frame, self.len).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Removes the last frame's effect after its transaction failed: cuts the file to `len`.
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()?;
        self.len = len;
        Ok(())
    }

    /// Empties the file for `generation` (after that generation was made durable in redb).
    pub fn reset(&mut self, generation: u64) -> io::Result<()> {
        self.truncate(0)?;
        self.generation = generation;
        Ok(())
    }
}

/// The payload of the valid frame of `generation` at `at`, and where the next one starts.
fn frame(bytes: &[u8], at: usize, generation: u64) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + HEADER)?;
    if &header[..4] != MAGIC || u64::from_le_bytes(header[4..12].try_into().ok()?) != generation {
        return None;
    }
    let len = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + HEADER + len))
}

/// Appends a record entry to a frame payload.
pub fn put_record(payload: &mut Vec<u8>, topic: &str, partition: u32, offset: u64, stored: &[u8]) {
    payload.push(1);
    put_bytes(payload, topic.as_bytes());
    payload.extend_from_slice(&partition.to_le_bytes());
    payload.extend_from_slice(&offset.to_le_bytes());
    put_bytes(payload, stored);
}

/// Appends a consumer-offset entry to a frame payload.
pub fn put_offset(payload: &mut Vec<u8>, group: &str, topic: &str, partition: u32, offset: u64) {
    payload.push(2);
    put_bytes(payload, group.as_bytes());
    put_bytes(payload, topic.as_bytes());
    payload.extend_from_slice(&partition.to_le_bytes());
    payload.extend_from_slice(&offset.to_le_bytes());
}

fn put_bytes(payload: &mut Vec<u8>, b: &[u8]) {
    payload.extend_from_slice(&(b.len() as u32).to_le_bytes());
    payload.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn parse(payload: &[u8]) -> Option<Vec<Entry>> {
    let mut r = Reader(payload);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let kind = r.take(1)?[0];
        out.push(match kind {
            1 => Entry::Record { topic: r.string()?, partition: r.u32()?, offset: r.u64()?, stored: r.bytes()?.to_vec() },
            2 => Entry::Offset { group: r.string()?, topic: r.string()?, partition: r.u32()?, offset: r.u64()? },
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(offset: u64) -> Vec<u8> {
        let mut p = Vec::new();
        put_record(&mut p, "t.messages", 3, offset, b"stored bytes");
        put_offset(&mut p, "workers", "t.messages", 3, offset);
        p
    }

    #[test]
    fn frames_of_the_generation_replay_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, replayed) = Wal::open(&path, 7).unwrap();
        assert!(replayed.is_empty());
        wal.append(&payload(1)).unwrap();
        wal.append(&payload(2)).unwrap();
        let good = wal.len();
        // A torn third frame: only part of it reached the disk.
        let mut torn = Vec::new();
        torn.extend_from_slice(MAGIC);
        torn.extend_from_slice(&7u64.to_le_bytes());
        torn.extend_from_slice(&100u32.to_le_bytes());
        torn.extend_from_slice(&[0, 0, 0, 0, 1, 2]);
        wal.file.write_all_at(&torn, good).unwrap();
        drop(wal);

        let (wal, replayed) = Wal::open(&path, 7).unwrap();
        assert_eq!(replayed.len(), 4);
        assert_eq!(replayed[2], Entry::Record { topic: "t.messages".into(), partition: 3, offset: 2, stored: b"stored bytes".to_vec() });
        assert_eq!(replayed[3], Entry::Offset { group: "workers".into(), topic: "t.messages".into(), partition: 3, offset: 2 });
        drop(wal);
        // Another generation's frames are not replayed.
        let (mut wal, replayed) = Wal::open(&path, 8).unwrap();
        assert!(replayed.is_empty());
        wal.reset(8).unwrap();
        wal.append(&payload(3)).unwrap();
        drop(wal);
        let (_, replayed) = Wal::open(&path, 8).unwrap();
        assert_eq!(replayed.len(), 2);
    }

    #[test]
    fn a_corrupted_payload_stops_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, _) = Wal::open(&path, 1).unwrap();
        wal.append(&payload(1)).unwrap();
        let second = wal.len();
        wal.append(&payload(2)).unwrap();
        wal.file.write_all_at(b"X", second + HEADER as u64 + 3).unwrap();
        drop(wal);
        let (_, replayed) = Wal::open(&path, 1).unwrap();
        assert_eq!(replayed.len(), 2, "only the first frame");
    }
}
