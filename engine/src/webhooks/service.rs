//! Commands on an account's endpoints: each appends a [`WebhookEvent`] to `<prefix>.webhooks`
//! (keyed by the endpoint id), then waits until the projection shows it (`Settings::wait`),
//! and puts the result in this node's registry at once.

use super::endpoints::{self, Endpoint, Registry};
use super::payload::EVENT_TYPES;
use super::sender::{Answer, Sender};
use super::signing::Secret;
use super::{ssrf, Settings};
use crate::log::{EventLog, LogError, Record, Topics};
use crate::routing::Router;
use crate::store::webhooks::{DeliveryRow, WebhookStore};
use crate::store::StoreError;
use herald_schemas::{
    encode, AccountId, EndpointCreated, EndpointDeleted, EndpointUpdated, Event, SecretRotated, Timestamp, WebhookEvent,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a command failed; each says which reply it becomes.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// 422 `invalid_webhook`.
    #[error("{0}")]
    Invalid(String),
    /// 422 `webhook_url_refused`.
    #[error("{0}")]
    Url(#[from] ssrf::UrlError),
    /// 404 `not_found`.
    #[error("no webhook endpoint {0}")]
    NotFound(String),
    /// 503 `log_unavailable`.
    #[error("the log is unavailable: {0}")]
    Log(#[from] LogError),
    /// 503 `store_unavailable`.
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

/// Most endpoints per account.
pub const MAX_ENDPOINTS: usize = 20;

/// What `POST /v1/webhooks` and `PATCH` take.
#[derive(Debug, Default, Clone)]
pub struct Change {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// The result of `POST /v1/webhooks/{id}/test`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    pub webhook_id: String,
    pub delivered: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

pub struct Webhooks {
    log: Arc<dyn EventLog>,
    store: Arc<dyn WebhookStore>,
    topics: Topics,
    router: Router,
    registry: Registry,
    sender: Arc<Sender>,
    settings: Settings,
}

impl Webhooks {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn WebhookStore>,
        topics: Topics,
        registry: Registry,
        sender: Arc<Sender>,
        settings: Settings,
    ) -> Self {
        let router = Router::new(log.partitions(), Default::default());
        Webhooks { log, store, topics, router, registry, sender, settings }
    }

    fn check_events(events: &[String]) -> Result<(), WebhookError> {
        if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(WebhookError::Invalid(format!(
                "unknown event type {bad:?}; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        Ok(())
    }

    fn check_description(d: &str) -> Result<(), WebhookError> {
        if d.chars().count() > 256 {
            return Err(WebhookError::Invalid("description: at most 256 characters".into()));
        }
        Ok(())
    }

    async fn append(&self, event: WebhookEvent) -> Result<(), WebhookError> {
        let id = event.endpoint_id().to_owned();
        let record = Record {
            topic: self.topics.webhooks(),
            partition: self.router.key_partition(&id),
            key: id,
            value: encode(&Event::Webhook(event)),
        };
        self.log.append(vec![record]).await?;
        Ok(())
    }

    /// Waits until the store's state of `id` satisfies `done`; returns what it shows last.
    async fn wait_for(
        &self,
        id: &str,
        done: impl Fn(&Option<Endpoint>) -> bool,
    ) -> Result<Option<Endpoint>, WebhookError> {
        let deadline = Instant::now() + self.settings.wait;
        loop {
            let current = self.store.endpoint(id).await?;
            if done(&current) || Instant::now() >= deadline {
                return Ok(current);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The store (the event feed reads it).
    pub fn store(&self) -> Arc<dyn WebhookStore> {
        self.store.clone()
    }

    /// The endpoint, if it is the account's.
    pub async fn get(&self, account: &AccountId, id: &str) -> Result<Endpoint, WebhookError> {
        match self.store.endpoint(id).await? {
            Some(e) if &e.account == account => Ok(e),
            _ => Err(WebhookError::NotFound(id.to_owned())),
        }
    }

    pub async fn list(&self, account: &AccountId) -> Result<Vec<Endpoint>, WebhookError> {
        let mut all: Vec<Endpoint> =
            self.store.endpoints().await?.into_iter().filter(|e| &e.account == account).collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Registers an endpoint; its state includes the new secret (shown once).
    pub async fn create(&self, account: &AccountId, c: Change) -> Result<Endpoint, WebhookError> {
        let url = c.url.ok_or_else(|| WebhookError::Invalid("url is required".into()))?;
        ssrf::check_url(&url, self.settings.allow_private_targets)?;
        let events = c.events.unwrap_or_default();
        Self::check_events(&events)?;
        let description = c.description.unwrap_or_default();
        Self::check_description(&description)?;
        if self.list(account).await?.len() >= MAX_ENDPOINTS {
            return Err(WebhookError::Invalid(format!("an account has at most {MAX_ENDPOINTS} endpoints")));
        }
        let id = format!("ep_{}", herald_schemas::MessageId::generate().0);
        let event = WebhookEvent::EndpointCreated(EndpointCreated {
            account: account.clone(),
            endpoint_id: id.clone(),
            url,
            events,
            description,
            secret: Secret::generate(),
            created_at: Timestamp::now(),
        });
        let state = endpoints::apply(None, &event);
        self.append(event).await?;
        self.wait_for(&id, |s| s.is_some()).await?;
        self.registry.put(&id, state.clone());
        tracing::info!(endpoint = %id, account = %account, "webhook endpoint created");
        state.ok_or(WebhookError::NotFound(id))
    }

    pub async fn update(&self, account: &AccountId, id: &str, c: Change) -> Result<Endpoint, WebhookError> {
        let current = self.get(account, id).await?;
        if let Some(url) = &c.url {
            ssrf::check_url(url, self.settings.allow_private_targets)?;
        }
        if let Some(events) = &c.events {
            Self::check_events(events)?;
        }
        if let Some(d) = &c.description {
            Self::check_description(d)?;
        }
        let at = Timestamp(Timestamp::now().millis().max(current.updated_at.millis() + 1));
        let event = WebhookEvent::EndpointUpdated(EndpointUpdated {
            account: account.clone(),
            endpoint_id: id.to_owned(),
            url: c.url,
            events: c.events,
            description: c.description,
            enabled: c.enabled,
            updated_at: at,
        });
        self.commit(id, current, event, at).await
    }

    /// A new secret; the previous one keeps signing for `rotation_overlap`.
    pub async fn rotate(&self, account: &AccountId, id: &str) -> Result<Endpoint, WebhookError> {
        let current = self.get(account, id).await?;
        let at = Timestamp(Timestamp::now().millis().max(current.updated_at.millis() + 1));
        let event = WebhookEvent::SecretRotated(SecretRotated {
            account: account.clone(),
            endpoint_id: id.to_owned(),
            secret: Secret::generate(),
            previous_until: Timestamp(at.millis() + self.settings.rotation_overlap.as_millis() as i64),
            rotated_at: at,
        });
        self.commit(id, current, event, at).await
    }

    async fn commit(
        &self,
        id: &str,
        current: Endpoint,
        event: WebhookEvent,
        at: Timestamp,
    ) -> Result<Endpoint, WebhookError> {
        let state = endpoints::apply(Some(current), &event).ok_or_else(|| WebhookError::NotFound(id.to_owned()))?;
        self.append(event).await?;
        self.wait_for(id, |s| s.as_ref().is_none_or(|s| s.updated_at >= at)).await?;
        self.registry.put(id, Some(state.clone()));
        Ok(state)
    }

    pub async fn delete(&self, account: &AccountId, id: &str) -> Result<(), WebhookError> {
        self.get(account, id).await?;
        self.append(WebhookEvent::EndpointDeleted(EndpointDeleted {
            account: account.clone(),
            endpoint_id: id.to_owned(),
            deleted_at: Timestamp::now(),
        }))
        .await?;
        self.wait_for(id, |s| s.is_none()).await?;
        self.registry.put(id, None);
        tracing::info!(endpoint = %id, account = %account, "webhook endpoint deleted");
        Ok(())
    }

    /// Sends a `webhook.test` event now and says how the endpoint answered (not retried).
    pub async fn test(&self, account: &AccountId, id: &str) -> Result<TestResult, WebhookError> {
        let e = self.get(account, id).await?;
        let webhook_id = format!("msg_test_{}", herald_schemas::MessageId::generate().0);
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "webhook.test",
            "timestamp": crate::projector::rfc3339(Timestamp::now()),
            "data": { "endpoint_id": e.id, "account": e.account },
        }))
        .unwrap_or_default();
        let live = super::endpoints::Live::new(e);
        let (answer, took) = self.sender.send(&live, &Default::default(), &webhook_id, body.into(), None).await;
        let (delivered, status, error) = match answer {
            Answer::Delivered(s) => (true, Some(s), None),
            Answer::Gone => (false, Some(410), Some("the endpoint answered 410 Gone".to_owned())),
            Answer::Failed { status, error, .. } => (false, status, Some(error)),
        };
        Ok(TestResult { webhook_id, delivered, status, error, duration_ms: took.as_millis() as u64 })
    }

    pub async fn deliveries(
        &self,
        account: &AccountId,
        id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, WebhookError> {
        self.get(account, id).await?;
        Ok(self.store.deliveries(id, before, limit).await?)
    }
}
