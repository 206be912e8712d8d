//! Which partition a message goes to. Pure functions, identical for every backend.
//!
//! The key of every message event is its recipient domain, hashed with Kafka's own
//! murmur2 partitioner so that tools reading the topics agree with us. A domain listed as
//! *hot* (gmail.com at an ESP) is spread over `spread` consecutive partitions, chosen by
//! message id, so no single partition (and no single worker) carries it alone; the key is
//! still the domain, so per-domain accounting downstream is unchanged.

use std::collections::HashMap;

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Chooses partitions for recipient domains.
#[derive(Debug, Clone)]
pub struct Router {
    partitions: u32,
    hot: HashMap<String, u32>,
}

impl Router {
    /// `hot` maps a domain to the number of partitions it is spread over (capped at the
    /// partition count).
    pub fn new(partitions: u32, hot: HashMap<String, u32>) -> Self {
        assert!(partitions > 0, "a log needs at least one partition");
        let hot = hot.into_iter().map(|(d, n)| (d.to_ascii_lowercase(), n.clamp(1, partitions))).collect();
        Router { partitions, hot }
    }

    /// The partition of `domain` for the message `message_id`.
    pub fn partition(&self, domain: &str, message_id: &str) -> u32 {
        let base = (murmur2(domain.as_bytes()) & 0x7fff_ffff) % self.partitions;
        match self.hot.get(domain) {
            Some(&spread) if spread > 1 => {
                let lane = (murmur2(message_id.as_bytes()) & 0x7fff_ffff) % spread;
                (base + lane) % self.partitions
            }
            _ => base,
        }
    }

    /// Every partition messages to `domain` can go to: one, or the spread of a hot domain.
    pub fn partitions_of(&self, domain: &str) -> Vec<u32> {
        let base = (murmur2(domain.as_bytes()) & 0x7fff_ffff) % self.partitions;
        let spread = self.hot.get(domain).copied().unwrap_or(1).max(1);
        (0..spread).map(|lane| (base + lane) % self.partitions).collect()
    }

    /// The partition of a plain key (no hot-domain spreading): sender-domain events.
    pub fn key_partition(&self, key: &str) -> u32 {
        (murmur2(key.as_bytes()) & 0x7fff_ffff) % self.partitions
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn same_domain_same_partition_unless_hot() {
        let r = Router::new(16, HashMap::from([("gmail.test".to_owned(), 4)]));
        let p = r.partition("example.org", "m1");
        for i in 0..100 {
            assert_eq!(r.partition("example.org", &format!("m{i}")), p);
        }
        let lanes: std::collections::HashSet<u32> =
            (0..200).map(|i| r.partition("gmail.test", &format!("m{i}"))).collect();
        assert_eq!(lanes.len(), 4, "a hot domain uses exactly its spread: {lanes:?}");
        let all: std::collections::HashSet<u32> = r.partitions_of("gmail.test").into_iter().collect();
        assert_eq!(all, lanes);
        assert_eq!(r.partitions_of("example.org"), vec![p]);
    }
}
