//! Rates and the throttle maths: pure, no I/O, no clock of its own (every function takes
//! `now`), so it is tested without sockets or sleeps.
//!
//! - [`Rate`]: `N/s|m|h|d` (or a number: per second), as written in the providers file.
//! - [`Pacer`]: a GCRA (generic cell rate algorithm) that hands out *reservations*: the
//!   time at which the next message may go, if that is within the wait the caller accepts.
//!   Unlike a check-only limiter, a reservation is a place in line, so messages from every
//!   partition of the node go out in the order they asked, evenly spaced, and the caller
//!   knows how long the line is (which decides between waiting and setting the message
//!   aside, see `docs/shaping.md`).
//! - [`effective`]: a lane's limits once the active throttles and the node's share of the
//!   cluster are applied.
//! - [`share`]: a node's share of a cluster-wide limit, from every node's demand.

use herald_schemas::{ProviderThrottled, ThrottleAction, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// `messages` per `per_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub messages: u32,
    pub per_secs: u32,
}

impl Rate {
    /// `N/s`, `N/m`, `N/h`, `N/d` (also `sec`, `min`, `hour`, `day` and plurals), or a
    /// plain number of messages per second (`0.5` is one message every two seconds).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let t = text.trim();
        let bad =
            || format!("`{text}` is not a rate: write N/s, N/m, N/h or N/d (N a whole number), or a number per second");
        match t.split_once('/') {
            Some((n, unit)) => {
                let messages: u32 = n.trim().parse().map_err(|_| bad())?;
                let per_secs = match unit.trim().to_ascii_lowercase().as_str() {
                    "s" | "sec" | "second" | "seconds" => 1,
                    "m" | "min" | "minute" | "minutes" => 60,
                    "h" | "hr" | "hour" | "hours" => 3600,
                    "d" | "day" | "days" => 86_400,
                    _ => return Err(bad()),
                };
                Rate::new(messages, per_secs).map_err(|e| format!("`{text}`: {e}"))
            }
            None => Rate::per_second(t.parse::<f64>().map_err(|_| bad())?),
        }
    }

    pub fn new(messages: u32, per_secs: u32) -> Result<Rate, String> {
        if messages == 0 || per_secs == 0 {
            return Err("a rate must be above zero (leave the key out for no limit)".into());
        }
        Ok(Rate { messages, per_secs })
    }

    /// A rate in messages per second, kept exact for whole numbers and to 1/3600 otherwise.
    pub fn per_second(x: f64) -> Result<Rate, String> {
        if !(x.is_finite() && x > 0.0) {
            return Err(format!("{x} is not a rate above zero"));
        }
        if x.fract() == 0.0 && x <= u32::MAX as f64 {
            return Rate::new(x as u32, 1);
        }
        let per_hour = (x * 3600.0).round();
        if per_hour < 1.0 || per_hour > u32::MAX as f64 {
            return Err(format!("{x} per second is out of range"));
        }
        Rate::new(per_hour as u32, 3600)
    }

    pub fn as_per_second(&self) -> f64 {
        self.messages as f64 / self.per_secs as f64
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(x) => Rate::per_second(x),
            Raw::Text(t) => Rate::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// `90s`, `30m`, `2h`, `1d` (also `2 hours`, `30 minutes`, ...), or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || format!("`{text}` is not a duration: write 90s, 30m, 2h or 1d");
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("`{text}`: a duration must be above zero"));
    }
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// A GCRA pacer with reservations. `burst` messages may go back to back after a quiet
/// spell; after that they are spaced by the rate's interval.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    burst: u32,
    /// Theoretical arrival time of the next message.
    tat: Option<Instant>,
}

impl Pacer {
    pub fn new(per_second: f64, burst: u32) -> Pacer {
        Pacer { interval: interval_of(per_second), burst: burst.max(1), tat: None }
    }

    /// The burst a rate gets by default: 50 ms worth of messages, at least one. Small
    /// enough that a minute's count stays within a few percent of the rate, large enough
    /// that timer granularity does not slow a fast rate down.
    pub fn default_burst(per_second: f64) -> u32 {
        ((per_second * 0.05).ceil() as u32).max(1)
    }

    /// Changes the rate for messages not yet reserved.
    pub fn set_rate(&mut self, per_second: f64) {
        self.interval = interval_of(per_second);
        self.burst = Pacer::default_burst(per_second);
    }

    /// Forgets the reservations made so far: the next message may go now.
    pub fn restart(&mut self) {
        self.tat = None;
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn tolerance(&self) -> Duration {
        self.interval.saturating_mul(self.burst - 1)
    }

    /// When the next message could go, if it asked at `now`.
    pub fn next_slot(&self, now: Instant) -> Instant {
        match self.tat {
            Some(tat) => tat.checked_sub(self.tolerance()).map_or(now, |t| t.max(now)),
            None => now,
        }
    }

    /// Reserves the next slot when it is no more than `max_wait` away: returns the time the
    /// message may go. Otherwise reserves nothing and returns how long it would have had
    /// to wait.
    pub fn reserve(&mut self, now: Instant, max_wait: Duration) -> Result<Instant, Duration> {
        let slot = self.next_slot(now);
        let wait = slot - now;
        if wait > max_wait {
            return Err(wait);
        }
        self.tat = Some(self.tat.map_or(now, |t| t.max(now)) + self.interval);
        Ok(slot)
    }

    /// Gives back a reservation that was not used (the message was set aside after all),
    /// if it is still the last one.
    pub fn release(&mut self, slot: Instant, now: Instant) {
        if let Some(tat) = self.tat {
            if slot >= now && tat.checked_sub(self.interval).is_some_and(|t| t >= slot) {
                self.tat = Some(tat - self.interval);
            }
        }
    }
}

fn interval_of(per_second: f64) -> Duration {
    if per_second > 0.0 && per_second.is_finite() {
        Duration::from_secs_f64(1.0 / per_second)
    } else {
        Duration::from_secs(86_400)
    }
}

/// A lane's limits after throttles and the cluster share.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Effective {
    /// Messages per second; `None`: no rate limit.
    pub rate: Option<f64>,
    pub max_connections: Option<u32>,
    /// Nothing goes before this.
    pub suspended_until: Option<Timestamp>,
}

/// Applies the active `throttles` and the node's `share` of the cluster to a lane's
/// configured rate and connection limit. A scaled rate applies to the configured rate (a
/// lane without one stays unlimited: rules that must bite there set an absolute rate); a
/// limited rate and a connection cap are upper bounds; suspensions win. The share scales
/// the rate and the connections (at least one connection).
pub fn effective(
    rate: Option<f64>,
    max_connections: Option<u32>,
    throttles: &[&ProviderThrottled],
    share: f64,
    now: Timestamp,
) -> Effective {
    let mut e = Effective { rate, max_connections, suspended_until: None };
    for t in throttles.iter().filter(|t| t.until > now) {
        match t.action {
            ThrottleAction::Suspend => e.suspended_until = Some(e.suspended_until.map_or(t.until, |u| u.max(t.until))),
            ThrottleAction::ScaleRate { factor_permille } => {
                e.rate = e.rate.map(|r| r * factor_permille as f64 / 1000.0);
            }
            ThrottleAction::LimitRate { messages, per_secs } => {
                let cap = messages as f64 / per_secs.max(1) as f64;
                e.rate = Some(e.rate.map_or(cap, |r| r.min(cap)));
            }
            ThrottleAction::CapConnections { max } => {
                e.max_connections = Some(e.max_connections.map_or(max, |m| m.min(max)));
            }
        }
    }
    let share = share.clamp(0.0, 1.0);
    if share < 1.0 {
        e.rate = e.rate.map(|r| r * share);
        e.max_connections = e.max_connections.map(|m| ((m as f64 * share).ceil() as u32).max(1));
    }
    e
}

/// The share a lane applies next, from the one it applied (`old`) and the one just
/// `computed`: down at once, up half way. Every node sees the others' demand one report
/// late; rising slowly keeps the shares' sum from passing one while demand moves, at the
/// cost of a node taking two or three intervals to grow into a freed share.
pub fn smooth(old: f64, computed: f64) -> f64 {
    if computed <= old {
        computed
    } else {
        (old + computed) / 2.0
    }
}

/// A node's share of a cluster-wide limit: its own demand over everyone's. `others` are
/// the demands other nodes reported recently. A node alone (or the only one with demand)
/// has the whole limit; a node with no demand of its own keeps a share of one message
/// among the others' so its first message is not refused outright.
pub fn share(own: f64, others: &[f64]) -> f64 {
    let rest: f64 = others.iter().filter(|d| d.is_finite() && **d > 0.0).sum();
    if rest <= 0.0 {
        return 1.0;
    }
    let own = own.max(1.0);
    own / (own + rest)
}

/// A new lane's share, before its own backlog is known: an equal part among this node and
/// the nodes that reported demand (`others`). From its own demand of one message it would
/// be 1/500 next to a node with 499 waiting, and everything it set aside in the second
/// before its first report would be timed at that (see `Shaper::park_rate`).
pub fn fair_share(others: &[f64]) -> f64 {
    let busy = others.iter().filter(|d| d.is_finite() && **d > 0.0).count();
    1.0 / (busy as f64 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("20/s").unwrap(), Rate { messages: 20, per_secs: 1 });
        assert_eq!(Rate::parse("100/min").unwrap(), Rate { messages: 100, per_secs: 60 });
        assert_eq!(Rate::parse("10 / h").unwrap(), Rate { messages: 10, per_secs: 3600 });
        assert_eq!(Rate::parse("5/d").unwrap(), Rate { messages: 5, per_secs: 86_400 });
        assert_eq!(Rate::parse("0.5").unwrap(), Rate { messages: 1800, per_secs: 3600 });
        assert_eq!(Rate::parse("250").unwrap(), Rate { messages: 250, per_secs: 1 });
        for bad in ["", "x/s", "10/w", "0/s", "-1", "1.5/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert!((Rate::parse("100/m").unwrap().as_per_second() - 1.6667).abs() < 1e-3);
        #[derive(Deserialize)]
        struct T {
            a: Rate,
            b: Rate,
        }
        let t: T = toml::from_str("a = 20\nb = \"3/h\"").unwrap();
        assert_eq!((t.a.messages, t.b.per_secs), (20, 3600));
        assert!(toml::from_str::<T>("a = 0\nb = \"3/h\"").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2 hours").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "m", "3w", "0s", "-1m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pacer_spaces_reservations_and_counts_a_minute_exactly() {
        let t0 = Instant::now();
        let mut p = Pacer::new(20.0, 1);
        let mut slots = vec![];
        for _ in 0..5 {
            slots.push(p.reserve(t0, Duration::from_secs(10)).unwrap());
        }
        let gaps: Vec<u128> = slots.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(gaps, vec![50, 50, 50, 50]);
        // Asking at every instant for 60 s: exactly 20/s plus the burst.
        for (rate, burst) in [(10.0, 1), (100.0, 5), (1000.0, 50)] {
            let mut p = Pacer::new(rate, burst);
            let mut n = 0u32;
            let mut now = t0;
            let end = t0 + Duration::from_secs(60);
            while now < end {
                match p.reserve(now, Duration::ZERO) {
                    Ok(_) => n += 1,
                    Err(wait) => now += wait,
                }
            }
            let expected = rate * 60.0;
            assert!((n as f64 - expected).abs() <= burst as f64, "rate {rate}: {n} in 60 s");
        }
    }

    #[test]
    fn pacer_refuses_beyond_the_wait_and_reports_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2.0, 1);
        for _ in 0..10 {
            p.reserve(t0, Duration::from_secs(5)).unwrap();
        }
        let wait = p.reserve(t0, Duration::from_secs(4)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(5));
        // Nothing was reserved by the refusal: the next one with more patience gets 5 s.
        assert_eq!(p.reserve(t0, Duration::from_secs(5)).unwrap() - t0, Duration::from_secs(5));
        // A quiet spell resets the line.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.reserve(later, Duration::ZERO).unwrap(), later);
    }

    #[test]
    fn pacer_burst_then_spacing_and_release() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0, 3);
        let slots: Vec<Duration> = (0..5).map(|_| p.reserve(t0, Duration::from_secs(1)).unwrap() - t0).collect();
        assert_eq!(
            slots,
            vec![
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(200)
            ]
        );
        let last = t0 + Duration::from_millis(200);
        p.release(last, t0);
        assert_eq!(p.reserve(t0, Duration::from_secs(1)).unwrap(), last, "a released slot is handed out again");
    }

    fn throttle(action: ThrottleAction, until: i64) -> ProviderThrottled {
        ProviderThrottled {
            id: "t".into(),
            provider: "p".into(),
            domain: None,
            source: None,
            action,
            rule: "r".into(),
            reason: String::new(),
            node: "n".into(),
            at: Timestamp(0),
            until: Timestamp(until),
        }
    }

    #[test]
    fn throttles_and_share_combine() {
        let now = Timestamp(1000);
        let scale = throttle(ThrottleAction::ScaleRate { factor_permille: 250 }, 5000);
        let limit = throttle(ThrottleAction::LimitRate { messages: 60, per_secs: 60 }, 5000);
        let cap = throttle(ThrottleAction::CapConnections { max: 2 }, 5000);
        let expired = throttle(ThrottleAction::Suspend, 900);
        let e = effective(Some(20.0), Some(10), &[&scale, &cap, &expired], 1.0, now);
        assert_eq!(e, Effective { rate: Some(5.0), max_connections: Some(2), suspended_until: None });
        let e = effective(Some(20.0), Some(10), &[&limit], 1.0, now);
        assert_eq!(e.rate, Some(1.0));
        let e = effective(None, None, &[&scale, &limit], 1.0, now);
        assert_eq!(e.rate, Some(1.0), "an unlimited rate is not scaled, but capped");
        let e = effective(Some(30.0), Some(10), &[], 1.0 / 3.0, now);
        assert!((e.rate.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(e.max_connections, Some(4));
        let suspend = throttle(ThrottleAction::Suspend, 7000);
        let e = effective(Some(30.0), None, &[&suspend, &throttle(ThrottleAction::Suspend, 6000)], 1.0, now);
        assert_eq!(e.suspended_until, Some(Timestamp(7000)));
    }

    #[test]
    fn shares_fall_at_once_and_rise_half_way() {
        assert_eq!(smooth(0.8, 0.2), 0.2);
        assert_eq!(smooth(0.2, 0.8), 0.5);
        assert_eq!(smooth(0.5, 0.5), 0.5);
        // Two nodes swapping their demand: the applied shares never add up to more than one.
        let (mut a, mut b) = (0.9, 0.1);
        for (ca, cb) in [(0.1, 0.9), (0.9, 0.1), (0.5, 0.5), (0.2, 0.8)] {
            a = smooth(a, ca);
            b = smooth(b, cb);
            assert!(a + b <= 1.0 + 1e-9, "{a} + {b}");
        }
    }

    #[test]
    fn shares() {
        assert_eq!(share(10.0, &[]), 1.0);
        assert_eq!(share(10.0, &[0.0, 0.0]), 1.0);
        assert!((share(10.0, &[10.0, 20.0]) - 0.25).abs() < 1e-9);
        assert!((share(0.0, &[99.0]) - 0.01).abs() < 1e-9);
        // Three nodes seeing the same demands: the shares add up to one.
        let d = [30.0, 50.0, 20.0];
        let total: f64 = (0..3)
            .map(|i| {
                let others: Vec<f64> = (0..3).filter(|j| *j != i).map(|j| d[j]).collect();
                share(d[i], &others)
            })
            .sum();
        assert!((total - 1.0).abs() < 1e-9);
        // A new lane: an equal part among the nodes with demand, whatever their backlog.
        assert_eq!(fair_share(&[]), 1.0);
        assert_eq!(fair_share(&[499.0, 0.0]), 0.5);
        assert!((fair_share(&[499.0, 3.0]) - 1.0 / 3.0).abs() < 1e-9);
    }
}
