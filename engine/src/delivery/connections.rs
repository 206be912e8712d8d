//! The SMTP connections of one lane (a provider, or a `default` domain, from one source
//! address): at most `cap` open at once, idle ones included; idle sessions cached per MX
//! address (like Postfix's connection cache) and reused; a session closed after
//! `per_connection` messages; new connections paced by `connect_rate` (governor).
//!
//! A delivery checks out a [`Lease`] (a cached session, or the right to open one). When the
//! lane is full it waits until a session comes back, or closes an idle session to another
//! MX address of the lane to make room, or gives up at its deadline ([`Busy`]: nothing was
//! sent, the worker sets the message aside). The lease gives the slot back when dropped,
//! so an aborted delivery never leaks a connection slot. A session being closed (QUIT)
//! keeps its slot until the QUIT is answered, so the receiver never sees more sessions
//! than the cap, not even for a moment.

use super::smtp::Session;
use crate::shaping::limits::Rate;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Idle sessions kept per MX address.
const MAX_IDLE_PER_ADDRESS: usize = 64;
/// An idle session older than this is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages over one session when the provider sets no limit.
pub const DEFAULT_PER_CONNECTION: u32 = 1000;

/// No connection came free before the deadline: nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

#[derive(Default)]
struct Inner {
    idle: HashMap<SocketAddr, Vec<Session>>,
    /// Sessions open (idle, in use, or being opened).
    open: usize,
    /// Sessions in use or being opened.
    busy: usize,
}

pub struct Connections {
    inner: Arc<Mutex<Inner>>,
    freed: Arc<Notify>,
    cap: AtomicUsize,
    per_connection: u32,
    connect_rate: Option<DefaultDirectRateLimiter>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections::new(None, None, None)
    }
}

/// Says QUIT (at most 5 s), then frees the session's slot.
fn closing(session: Session, inner: Arc<Mutex<Inner>>, freed: Arc<Notify>) {
    tokio::spawn(async move {
        let Session { client, .. } = session;
        let _ = tokio::time::timeout(Duration::from_secs(5), client.quit()).await;
        inner.lock().expect("connections poisoned").open -= 1;
        freed.notify_one();
    });
}

impl Connections {
    pub fn new(cap: Option<u32>, per_connection: Option<u32>, connect_rate: Option<Rate>) -> Connections {
        let connect_rate = connect_rate.map(|r| {
            let period = Duration::from_secs(r.per_secs as u64) / r.messages.max(1);
            let quota = Quota::with_period(period.max(Duration::from_micros(1)))
                .expect("a positive period")
                .allow_burst(NonZeroU32::new((r.messages / r.per_secs.max(1)).max(1)).expect("at least one"));
            RateLimiter::direct(quota)
        });
        Connections {
            inner: Arc::new(Mutex::new(Inner::default())),
            freed: Arc::new(Notify::new()),
            cap: AtomicUsize::new(cap.map_or(usize::MAX, |c| c.max(1) as usize)),
            per_connection: per_connection.unwrap_or(DEFAULT_PER_CONNECTION).max(1),
            connect_rate,
        }
    }

    /// Changes the cap (a throttle, or the node's share of the cluster). Sessions above a
    /// lowered cap close as they come back.
    pub fn set_cap(&self, cap: Option<u32>) {
        let cap = cap.map_or(usize::MAX, |c| c.max(1) as usize);
        if self.cap.swap(cap, Ordering::Relaxed) < cap {
            self.freed.notify_waiters();
        }
    }

    pub fn cap(&self) -> Option<usize> {
        Some(self.cap.load(Ordering::Relaxed)).filter(|c| *c != usize::MAX)
    }

    /// (open, in use) right now.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("connections poisoned");
        (inner.open, inner.busy)
    }

    /// Closes idle sessions past their idle time.
    pub fn sweep(&self) {
        let mut stale = vec![];
        {
            let mut inner = self.inner.lock().expect("connections poisoned");
            for sessions in inner.idle.values_mut() {
                let (fresh, old): (Vec<Session>, Vec<Session>) =
                    sessions.drain(..).partition(|s| s.idle_since.elapsed() < IDLE_TIMEOUT);
                *sessions = fresh;
                stale.extend(old);
            }
            inner.idle.retain(|_, s| !s.is_empty());
        }
        stale.into_iter().for_each(|s| self.close(s));
    }

    /// A cached session to `addr`, or the right to open one (then `None`), waiting until
    /// `deadline` for room.
    pub async fn checkout(&self, addr: SocketAddr, deadline: Instant) -> Result<(Lease<'_>, Option<Session>), Busy> {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut stale = Vec::new();
            let outcome = {
                let mut inner = self.inner.lock().expect("connections poisoned");
                let mut found = None;
                if let Some(sessions) = inner.idle.get_mut(&addr) {
                    while let Some(s) = sessions.pop() {
                        if s.idle_since.elapsed() < IDLE_TIMEOUT {
                            found = Some(s);
                            break;
                        }
                        stale.push(s);
                    }
                }
                if found.is_some() {
                    inner.busy += 1;
                    Some(found)
                } else if inner.open < self.cap.load(Ordering::Relaxed) {
                    inner.open += 1;
                    inner.busy += 1;
                    Some(None)
                } else if let Some(s) = inner.idle.values_mut().find_map(|v| v.pop()) {
                    // Full: an idle session to another address of the lane makes room once
                    // its QUIT is answered (we wait for that below).
                    stale.push(s);
                    None
                } else {
                    None
                }
            };
            stale.into_iter().for_each(|s| self.close(s));
            match outcome {
                Some(Some(session)) => return Ok((Lease { conns: self, done: false }, Some(session))),
                Some(None) => return self.paced(deadline).await,
                None => {}
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return Err(Busy);
            }
        }
    }

    /// Waits for the connection rate (if any) before a new connection; gives the slot back
    /// when the deadline comes first.
    async fn paced(&self, deadline: Instant) -> Result<(Lease<'_>, Option<Session>), Busy> {
        let lease = Lease { conns: self, done: false };
        if let Some(limiter) = &self.connect_rate {
            if limiter.check().is_err()
                && tokio::time::timeout_at(deadline.into(), limiter.until_ready()).await.is_err()
            {
                return Err(Busy); // the lease drops: slot released
            }
        }
        Ok((lease, None))
    }

    fn release(&self, back: Option<(SocketAddr, Session)>) {
        let mut close = None;
        {
            let mut inner = self.inner.lock().expect("connections poisoned");
            inner.busy -= 1;
            match back {
                Some((addr, session))
                    if session.sent < self.per_connection && inner.open <= self.cap.load(Ordering::Relaxed) =>
                {
                    let sessions = inner.idle.entry(addr).or_default();
                    if sessions.len() < MAX_IDLE_PER_ADDRESS {
                        sessions.push(session);
                    } else {
                        close = Some(session);
                    }
                }
                Some((_, session)) => close = Some(session),
                None => inner.open -= 1,
            }
        }
        self.freed.notify_one();
        if let Some(s) = close {
            self.close(s);
        }
    }

    /// Closes `session` in the background; its slot is freed once the QUIT is answered.
    fn close(&self, session: Session) {
        closing(session, self.inner.clone(), self.freed.clone());
    }
}

/// A connection slot of the lane, held while a delivery uses it.
pub struct Lease<'a> {
    conns: &'a Connections,
    done: bool,
}

impl Lease<'_> {
    /// Returns `session` to the idle cache (or closes it when its message count or the
    /// lane's cap says so).
    pub fn keep(mut self, addr: SocketAddr, mut session: Session) {
        self.done = true;
        session.idle_since = Instant::now();
        self.conns.release(Some((addr, session)));
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conns.release(None);
        }
    }
}

/// Connections per lane are shared by every delivery to it.
pub type Shared = Arc<Connections>;
