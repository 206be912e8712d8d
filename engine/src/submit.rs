//! Appending accepted messages: the one path both REST and SMTP ingestion use.

use crate::log::{EventLog, LogError, Record, Topics};
use crate::routing::Router;
use herald_schemas::{encode, Event, MessageAccepted};
use std::sync::Arc;

#[derive(Clone)]
pub struct Submitter {
    log: Arc<dyn EventLog>,
    topics: Topics,
    router: Router,
}

impl Submitter {
    pub fn new(log: Arc<dyn EventLog>, topics: Topics, router: Router) -> Self {
        Submitter { log, topics, router }
    }

    /// Appends one `MessageAccepted` per message, each on its recipient domain's partition.
    /// On `Ok`, every one is durable; on `Err`, none may be reported as accepted.
    pub async fn submit(&self, messages: Vec<MessageAccepted>) -> Result<(), LogError> {
        let topic = self.topics.messages();
        let records = messages
            .into_iter()
            .map(|m| Record {
                topic: topic.clone(),
                partition: self.router.partition(&m.recipient_domain, &m.message_id.0),
                key: m.recipient_domain.clone(),
                value: encode(&Event::MessageAccepted(m)),
            })
            .collect::<Vec<_>>();
        let n = records.len() as u64;
        self.log.append(records).await?;
        metrics::counter!("herald_ingest_accepted_messages_total").increment(n);
        Ok(())
    }
}
