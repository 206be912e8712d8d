//! Lanes and tallies: the node's live state of each (provider, source).
//!
//! A [`Lane`] is what limits apply to: a named provider from one source address, or for
//! the `default` provider one recipient domain from one source. It holds the pacer (the
//! line of messages waiting for the rate), the connections (`delivery::connections`) and
//! a meter of the current rate. A [`Tally`] counts what the node admitted per (provider,
//! source) since its last usage report, per warm-up day, and the reports it appended but
//! has not read back yet, so warm-up caps count every message exactly once.

use super::limits::Pacer;
use super::pools::Source;
use super::providers::Provider;
use crate::delivery::Connections;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A lane's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaneKey {
    pub provider: String,
    /// The recipient domain, for the `default` provider (its limits are per domain).
    pub domain: Option<String>,
    pub source: String,
}

#[derive(Debug, Default)]
struct Pacing {
    pacer: Option<Pacer>,
    rate: Option<f64>,
    /// Where the line of messages set aside ends (virtual: they hold no reservation).
    parked_until: Option<Instant>,
    /// The slot in that line of each message set aside (by message id), so a message that
    /// comes back before its slot (the hold and retry delays are coarser than the line)
    /// keeps its place instead of joining the end again.
    slots: HashMap<String, Instant>,
    /// Bumped when the rate falls: slots reserved before are void, and the messages
    /// holding them take new ones at the new rate when they wake.
    epoch: u64,
    /// The interval (one over the rate) the line of messages set aside was laid out at.
    /// When a message is set aside at another one, the line (its end and every place in
    /// it) is first stretched or shrunk to it, so places given while the rate was low do
    /// not stay an hour away once it is higher, nor make the next messages join behind them.
    line_interval: Option<Duration>,
}

impl Pacing {
    /// A new rate for the slots not yet given. A lower one restarts the line and voids
    /// the slots given at the old rate (their messages would go faster than the new rate).
    fn set_rate(&mut self, rate: f64) {
        if self.rate == Some(rate) {
            return;
        }
        let slower = self.rate.is_some_and(|old| rate < old);
        match &mut self.pacer {
            Some(pacer) => {
                pacer.set_rate(rate);
                if slower {
                    pacer.restart();
                    self.epoch += 1;
                }
            }
            None => self.pacer = Some(Pacer::new(rate, Pacer::default_burst(rate))),
        }
        self.rate = Some(rate);
    }
}

/// Messages set aside per lane whose place in the line is remembered (beyond this, a
/// message coming back early joins the end of the line again).
const MAX_SLOTS: usize = 200_000;
/// A remembered place is forgotten this long after its time (the message went through
/// another node, or failed).
const SLOT_TTL: Duration = Duration::from_secs(600);
/// No place in the line of messages set aside is further away than this (a rate of one
/// message a day behind a long line).
const MAX_LINE: Duration = Duration::from_secs(30 * 86_400);

/// `t`, a time after `now` laid out at one interval, laid out at one `factor` times it.
fn stretch(t: &mut Instant, now: Instant, factor: f64) {
    if *t > now {
        let ahead = (*t - now).as_secs_f64() * factor;
        let ahead = Duration::try_from_secs_f64(ahead).unwrap_or(MAX_LINE).min(MAX_LINE);
        *t = now.checked_add(ahead).unwrap_or(*t);
    }
}

/// Admissions per second over the last ten seconds.
#[derive(Debug, Default)]
struct Meter {
    buckets: [u32; 10],
    /// The second of `buckets[0]`, counted from `origin`.
    second: u64,
}

pub struct Lane {
    pub key: LaneKey,
    pub provider: Arc<Provider>,
    pub source: Arc<Source>,
    pub connections: Connections,
    pacing: Mutex<Pacing>,
    /// Messages in the pacer's line right now.
    pub waiting: AtomicUsize,
    meter: Mutex<Meter>,
    origin: Instant,
    /// The node's share of the cluster-wide limits, as f64 bits.
    share: AtomicU64,
    last_used: Mutex<Instant>,
}

impl Lane {
    pub fn new(key: LaneKey, provider: Arc<Provider>, source: Arc<Source>) -> Lane {
        let l = &provider.limits;
        let connections = Connections::new(l.max_connections, l.messages_per_connection, l.connection_rate);
        let now = Instant::now();
        Lane {
            key,
            provider,
            source,
            connections,
            pacing: Mutex::new(Pacing::default()),
            waiting: AtomicUsize::new(0),
            meter: Mutex::new(Meter::default()),
            origin: now,
            share: AtomicU64::new(1f64.to_bits()),
            last_used: Mutex::new(now),
        }
    }

    pub fn share(&self) -> f64 {
        f64::from_bits(self.share.load(Ordering::Relaxed))
    }

    pub fn set_share(&self, share: f64) {
        self.share.store(share.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Reserves a slot in the rate's line (`None` rate: no limit, `Ok(None)`; see
    /// [`Pacer::reserve`]), and says in which epoch it was given: a slot is good only while
    /// [`Lane::epoch`] is unchanged.
    pub fn reserve(
        &self,
        rate: Option<f64>,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Option<(Instant, u64)>, Duration> {
        *self.last_used.lock().expect("lane poisoned") = now;
        let mut p = self.pacing.lock().expect("lane poisoned");
        let Some(rate) = rate else {
            p.rate = None;
            return Ok(None);
        };
        p.set_rate(rate);
        let epoch = p.epoch;
        p.pacer.as_mut().expect("set above").reserve(now, max_wait).map(|slot| Some((slot, epoch)))
    }

    /// Applies a lower rate at once (the node's share or a throttle fell), without a
    /// message asking: the slots reserved at the old rate become void.
    pub fn slow_to(&self, rate: Option<f64>) {
        if let Some(rate) = rate {
            let mut p = self.pacing.lock().expect("lane poisoned");
            if p.rate.is_some_and(|old| rate < old) {
                p.set_rate(rate);
            }
        }
    }

    /// The epoch of the slots now given (see [`Lane::reserve`]).
    pub fn epoch(&self) -> u64 {
        self.pacing.lock().expect("lane poisoned").epoch
    }

    /// Gives back a reservation the message will not use.
    pub fn release(&self, slot: Instant, now: Instant) {
        if let Some(pacer) = &mut self.pacing.lock().expect("lane poisoned").pacer {
            pacer.release(slot, now);
        }
    }

    /// How long message `id`, set aside now, should stay away: until its place in the
    /// line of messages set aside (kept from an earlier time it was set aside, while that
    /// place is still ahead), else the end of the line, one interval further. The line is
    /// laid out at `rate` (the lane's pacer rate when `None`): a rate other than the one it
    /// was laid out at stretches or shrinks it first.
    pub fn park_estimate(&self, id: &str, now: Instant, rate: Option<f64>) -> Duration {
        let mut guard = self.pacing.lock().expect("lane poisoned");
        let p = &mut *guard;
        let Some(pacer) = &p.pacer else { return Duration::ZERO };
        let interval = match rate.filter(|r| *r > 0.0 && r.is_finite()) {
            Some(r) => Duration::try_from_secs_f64(1.0 / r).unwrap_or(MAX_LINE).min(MAX_LINE),
            None => pacer.interval(),
        };
        let head = pacer.next_slot(now);
        if let Some(old) = p.line_interval.filter(|old| *old != interval && !old.is_zero()) {
            let factor = interval.as_secs_f64() / old.as_secs_f64();
            if let Some(end) = &mut p.parked_until {
                stretch(end, now, factor);
            }
            for slot in p.slots.values_mut() {
                stretch(slot, now, factor);
            }
        }
        p.line_interval = Some(interval);
        if let Some(slot) = p.slots.get(id).filter(|s| **s > now) {
            return *slot - now;
        }
        let end = p.parked_until.map_or(head, |t| t.max(head)) + interval;
        p.parked_until = Some(end);
        if p.slots.len() < MAX_SLOTS || p.slots.contains_key(id) {
            p.slots.insert(id.to_owned(), end);
        }
        end - now
    }

    /// Message `id` was admitted: it leaves the line of messages set aside.
    pub fn admitted(&self, id: &str) {
        let mut p = self.pacing.lock().expect("lane poisoned");
        if !p.slots.is_empty() {
            p.slots.remove(id);
        }
    }

    /// Forgets places in the line long past (their messages went elsewhere).
    pub fn sweep_slots(&self, now: Instant) {
        self.pacing.lock().expect("lane poisoned").slots.retain(|_, s| *s + SLOT_TTL > now);
    }

    /// Messages set aside whose place in the line is remembered.
    pub fn parked(&self) -> usize {
        self.pacing.lock().expect("lane poisoned").slots.len()
    }

    /// The effective rate last applied (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.pacing.lock().expect("lane poisoned").rate
    }

    /// Counts one admission in the rate meter.
    pub fn tick(&self, now: Instant) {
        let second = now.duration_since(self.origin).as_secs();
        let mut m = self.meter.lock().expect("lane poisoned");
        m.advance(second);
        m.buckets[(second % 10) as usize] += 1;
    }

    /// Admissions per second over the last ten full seconds.
    pub fn current_rate(&self, now: Instant) -> f64 {
        let second = now.duration_since(self.origin).as_secs();
        let mut m = self.meter.lock().expect("lane poisoned");
        m.advance(second);
        let current = m.buckets[(second % 10) as usize];
        let total: u32 = m.buckets.iter().sum::<u32>() - current;
        let span = second.clamp(1, 9);
        total as f64 / span as f64
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        now.duration_since(*self.last_used.lock().expect("lane poisoned"))
    }
}

impl Meter {
    fn advance(&mut self, second: u64) {
        if second >= self.second + 10 {
            self.buckets = [0; 10];
        } else {
            for s in self.second + 1..=second {
                self.buckets[(s % 10) as usize] = 0;
            }
        }
        self.second = self.second.max(second);
    }
}

/// What the node admitted for one (provider, source) since its last report.
#[derive(Debug, Default)]
pub struct Tally {
    /// Admissions per warm-up day (0: the source has no schedule).
    pub unreported: BTreeMap<u32, u64>,
    /// Messages set aside since the last report.
    pub parked: u32,
    /// Reports appended, not read back yet: (seq, day, count, appended at).
    pub pending: Vec<(u64, u32, u64, Instant)>,
}

impl Tally {
    /// The node's own messages on warm-up `day` that the cluster's counts do not show yet.
    pub fn local(&self, day: u32) -> u64 {
        self.unreported.get(&day).copied().unwrap_or(0)
            + self.pending.iter().filter(|p| p.1 == day).map(|p| p.2).sum::<u64>()
    }

    pub fn count(&mut self, day: u32) {
        *self.unreported.entry(day).or_default() += 1;
    }

    pub fn uncount(&mut self, day: u32) {
        if let Some(n) = self.unreported.get_mut(&day) {
            *n = n.saturating_sub(1);
        }
    }

    /// Messages admitted in the interval, all days.
    pub fn sent(&self) -> u64 {
        self.unreported.values().sum()
    }

    /// Our report `seq` was read back: the cluster's counts include it now.
    pub fn confirmed(&mut self, seq: u64) {
        self.pending.retain(|p| p.0 != seq);
    }

    /// Forgets reports that were never read back (their append failed).
    pub fn expire(&mut self, now: Instant) {
        self.pending.retain(|p| now.duration_since(p.3) < Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::pools::Pools;
    use crate::shaping::providers::Providers;

    fn lane() -> Lane {
        let providers = Providers::none();
        let pools = Pools::new(&[], "h.test", &[]).unwrap();
        let source = pools.for_account(&herald_schemas::AccountId("a".into())).sources[0].clone();
        let key = LaneKey { provider: "default".into(), domain: Some("x.test".into()), source: "default".into() };
        Lane::new(key, providers.default_provider().clone(), source)
    }

    #[test]
    fn meter_counts_the_last_seconds() {
        let l = lane();
        let t0 = l.origin;
        for s in 0..5u64 {
            for _ in 0..20 {
                l.tick(t0 + Duration::from_secs(s) + Duration::from_millis(10));
            }
        }
        let now = t0 + Duration::from_secs(5) + Duration::from_millis(500);
        assert!((l.current_rate(now) - 20.0).abs() < 1e-9, "{}", l.current_rate(now));
        assert_eq!(l.current_rate(t0 + Duration::from_secs(60)), 0.0);
    }

    #[test]
    fn a_lower_rate_voids_the_slots_given_at_the_old_one() {
        let l = lane();
        let now = Instant::now();
        let mut last = now;
        for _ in 0..20 {
            let (slot, epoch) = l.reserve(Some(10.0), now, Duration::from_secs(5)).unwrap().unwrap();
            assert_eq!(epoch, 0);
            last = slot;
        }
        assert_eq!(last - now, Duration::from_millis(1900), "20 slots 100 ms apart");
        // A higher rate keeps the slots already given.
        l.slow_to(Some(20.0));
        assert_eq!(l.epoch(), 0);
        l.reserve(Some(20.0), now, Duration::from_secs(5)).unwrap();
        assert_eq!(l.epoch(), 0);
        // The share halves: the old slots are void, the line starts again at 5 msg/s.
        l.slow_to(Some(5.0));
        assert_eq!(l.epoch(), 1);
        let (a, e) = l.reserve(Some(5.0), now, Duration::from_secs(5)).unwrap().unwrap();
        let (b, _) = l.reserve(Some(5.0), now, Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!((a - now, b - a, e), (Duration::ZERO, Duration::from_millis(200), 1));
        // Asking with a lower rate does the same as `slow_to`.
        l.reserve(Some(2.0), now, Duration::from_secs(5)).unwrap();
        assert_eq!(l.epoch(), 2);
    }

    #[test]
    fn parked_line_grows_with_each_message_set_aside() {
        let l = lane();
        let now = Instant::now();
        for _ in 0..11 {
            l.reserve(Some(2.0), now, Duration::from_secs(5)).unwrap(); // slots 0, 0.5 s, ... 5 s
        }
        assert!(l.reserve(Some(2.0), now, Duration::from_secs(5)).is_err());
        let first = l.park_estimate("m1", now, None);
        let second = l.park_estimate("m2", now, None);
        assert_eq!(first, Duration::from_millis(6000));
        assert_eq!(second - first, Duration::from_millis(500));
        // m1 comes back early (a coarser delay): it keeps its place, the line does not grow.
        let back = now + Duration::from_secs(4);
        assert_eq!(l.park_estimate("m1", back, None), Duration::from_millis(2000));
        assert_eq!(l.park_estimate("m3", now, None) - second, Duration::from_millis(500));
        assert_eq!(l.parked(), 3);
        l.admitted("m1");
        assert_eq!(l.parked(), 2);
        l.sweep_slots(now + Duration::from_secs(3600));
        assert_eq!(l.parked(), 0);
        assert_eq!(l.reserve(None, now, Duration::ZERO), Ok(None));
    }

    #[test]
    fn the_parked_line_follows_the_rate_it_is_timed_at() {
        let l = lane();
        let now = Instant::now();
        // A share of 1/500 of 30 msg/s: one message every 16.7 s.
        let slow = 30.0 / 500.0;
        l.reserve(Some(slow), now, Duration::ZERO).unwrap();
        assert!(l.reserve(Some(slow), now, Duration::ZERO).is_err());
        let mut last = Duration::ZERO;
        for i in 0..300 {
            last = l.park_estimate(&format!("m{i}"), now, Some(slow));
        }
        assert!(last > Duration::from_secs(4000), "300 places 16.7 s apart: {last:?}");
        // The share recovers to a half: the line shrinks 250-fold, for the places already
        // given and for the next message.
        let fast = 15.0;
        let back = l.park_estimate("m299", now, Some(fast));
        assert!(back < Duration::from_secs(21), "m299 keeps its place, 250 times nearer: {back:?}");
        let next = l.park_estimate("m300", now, Some(fast));
        assert!(next > back && next - back < Duration::from_millis(100), "{back:?} then {next:?}");
        // And stretches back when the rate falls again.
        let again = l.park_estimate("m300", now, Some(slow));
        assert!(again > Duration::from_secs(4000), "{again:?}");
    }

    #[test]
    fn tallies_count_each_message_once() {
        let mut t = Tally::default();
        t.count(3);
        t.count(3);
        t.count(0);
        assert_eq!((t.local(3), t.sent()), (2, 3));
        t.pending.push((7, 3, 2, Instant::now()));
        t.unreported.clear();
        assert_eq!(t.local(3), 2, "appended, not read back: still counted here");
        t.confirmed(7);
        assert_eq!(t.local(3), 0, "read back: the cluster's count has it");
    }
}
