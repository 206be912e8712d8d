//! When the tracking server answers relative to the append (`docs/adr/0010-tracking-tokens.md`):
//! redirects and pixels are answered at once and their events go to a bounded in-memory
//! queue, which one task appends to the log in batches (whatever queued while the previous
//! append ran: a batch per fsync or per Kafka produce). A slow log never slows a redirect;
//! what is lost on a crash is at most what was queued, not yet appended (normally a few
//! milliseconds of clicks; under load a batch waits 2 ms more for others, so the log takes
//! fewer, larger appends), and when the queue is full (the log is down) further opens and
//! clicks are counted as dropped, not waited for. An unsubscription is different: its `200`
//! acknowledges it, so the POST waits for its batch to be durable and answers `503` if it is
//! not within [`ACK_TIMEOUT`].

use herald_engine::log::{EventLog, Record};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most records appended at once.
const MAX_BATCH: usize = 4096;
/// A batch at least this large waits [`LINGER`] for more before its append.
const LINGER_FROM: usize = 32;
const LINGER: Duration = Duration::from_millis(2);
/// How long an acknowledged event waits for its append.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

struct Item {
    record: Record,
    ack: Option<oneshot::Sender<bool>>,
}

/// The sending side; cloned into every request handler.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Item>,
}

impl Appender {
    /// Starts the appending task on `log` with room for `capacity` queued events. The task
    /// ends once every `Appender` is dropped and the queue is drained.
    pub fn start(log: Arc<dyn EventLog>, capacity: usize) -> (Appender, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Appender { tx }, tokio::spawn(run(log, rx)))
    }

    /// Queues `record` without waiting; `false` when the queue is full (counted as dropped).
    pub fn queue(&self, record: Record) -> bool {
        match self.tx.try_send(Item { record, ack: None }) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("herald_tracking_events_dropped_total").increment(1);
                false
            }
        }
    }

    /// Appends `record` and waits until it is durable; `false` if it is not within
    /// [`ACK_TIMEOUT`] (it may still be appended later).
    pub async fn append(&self, record: Record) -> bool {
        let (ack, done) = oneshot::channel();
        let queued = tokio::time::timeout(ACK_TIMEOUT, self.tx.send(Item { record, ack: Some(ack) })).await;
        if !matches!(queued, Ok(Ok(()))) {
            return false;
        }
        matches!(tokio::time::timeout(ACK_TIMEOUT, done).await, Ok(Ok(true)))
    }
}

async fn run(log: Arc<dyn EventLog>, mut rx: mpsc::Receiver<Item>) {
    let mut records: Vec<Record> = Vec::with_capacity(256);
    let mut acks: Vec<oneshot::Sender<bool>> = Vec::new();
    while let Some(first) = rx.recv().await {
        records.push(first.record);
        acks.extend(first.ack);
        take_queued(&mut rx, &mut records, &mut acks);
        // Busy (a large batch queued while the last append ran): wait a moment for more, so
        // the log takes fewer, larger appends. Quiet traffic is appended at once.
        if (LINGER_FROM..MAX_BATCH).contains(&records.len()) {
            tokio::time::sleep(LINGER).await;
            take_queued(&mut rx, &mut records, &mut acks);
        }
        let batch = std::mem::take(&mut records);
        let mut backoff = Duration::from_millis(50);
        // The append takes its records: each attempt gets a copy, the batch stays for a retry.
        while let Err(e) = log.append(batch.clone()).await {
            tracing::error!(error = %e, events = batch.len(), "appending engagement events failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        metrics::counter!("herald_tracking_events_appended_total").increment(batch.len() as u64);
        for ack in acks.drain(..) {
            let _ = ack.send(true);
        }
    }
}

/// Moves whatever is queued now into the batch, up to [`MAX_BATCH`] records.
fn take_queued(rx: &mut mpsc::Receiver<Item>, records: &mut Vec<Record>, acks: &mut Vec<oneshot::Sender<bool>>) {
    while records.len() < MAX_BATCH {
        let Ok(item) = rx.try_recv() else { break };
        records.push(item.record);
        acks.extend(item.ack);
    }
}
