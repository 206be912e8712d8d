//! The commands and queries behind `/v1/suppressions` and `/v1/bounces`. A change is an
//! event appended to `<prefix>.feedback`; single changes then wait until the projection
//! shows them (the caller reads its own write), bulk imports do not.

use super::policy::normalize;
use crate::log::{EventLog, LogError, Record, Topics};
use crate::routing::Router;
use crate::store::feedback::{BounceRow, FeedbackStore, Page, Suppression};
use crate::store::StoreError;
use herald_schemas::{
    AccountId, BounceClass, FeedbackEvent, MessageId, RecipientSuppressed, SuppressionLifted, SuppressionReason,
    Timestamp,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of the feedback commands; each says which reply it becomes.
#[derive(Debug, Error)]
pub enum FeedbackError {
    /// 404 `not_found`: no entry in force for that address.
    #[error("{0} is not suppressed")]
    NotFound(String),
    /// 400 `invalid_cursor`.
    #[error("invalid cursor")]
    BadCursor,
    /// 503 `log_unavailable`: nothing was appended.
    #[error("event log: {0}")]
    Log(#[from] LogError),
    /// 503 `store_unavailable`.
    #[error("projection store: {0}")]
    Store(StoreError),
    /// 503 `projection_lag`: the change is in the log and will show shortly.
    #[error("the change for {0} is recorded but not yet visible; read it again shortly")]
    Lag(String),
}

impl From<StoreError> for FeedbackError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor(_) => FeedbackError::BadCursor,
            other => FeedbackError::Store(other),
        }
    }
}

/// One entry to put (API body or import line).
#[derive(Debug, Clone)]
pub struct NewSuppression {
    pub address: String,
    pub reason: SuppressionReason,
    pub detail: String,
    pub expires_at: Option<Timestamp>,
}

pub struct FeedbackService {
    log: Arc<dyn EventLog>,
    topics: Topics,
    router: Router,
    store: Arc<dyn FeedbackStore>,
    /// How long a single change waits for the projection.
    wait: Duration,
}

/// Events appended per call by an import.
const IMPORT_BATCH: usize = 2000;

impl FeedbackService {
    pub fn new(
        log: Arc<dyn EventLog>,
        topics: Topics,
        router: Router,
        store: Arc<dyn FeedbackStore>,
        wait: Duration,
    ) -> Self {
        FeedbackService { log, topics, router, store, wait }
    }

    fn record(&self, event: FeedbackEvent) -> Record {
        super::record(&self.topics, &self.router, event)
    }

    /// The entry in force for `address`.
    pub async fn get(&self, account: &AccountId, address: &str) -> Result<Suppression, FeedbackError> {
        let address = normalize(address);
        match self.store.suppression(account, &address).await? {
            Some(s) if s.active(Timestamp::now()) => Ok(s),
            _ => Err(FeedbackError::NotFound(address)),
        }
    }

    /// Puts an entry (replacing one in force); returns it and whether there was none.
    pub async fn put(&self, account: &AccountId, new: NewSuppression) -> Result<(Suppression, bool), FeedbackError> {
        let address = normalize(&new.address);
        let existed = self.get(account, &address).await.is_ok();
        let id = MessageId::generate().0;
        let event = RecipientSuppressed {
            account: account.clone(),
            recipient: address.clone(),
            reason: new.reason,
            message_id: None,
            detail: new.detail,
            expires_at: new.expires_at,
            id: id.clone(),
            suppressed_at: Timestamp::now(),
        };
        self.log.append(vec![self.record(FeedbackEvent::RecipientSuppressed(event))]).await?;
        let shown = self
            .until(|| async { Ok(self.store.suppression(account, &address).await?.filter(|s| s.id == id)) })
            .await?;
        Ok((shown.ok_or(FeedbackError::Lag(address))?, !existed))
    }

    /// Lifts the entry in force for `address` (404 when there is none).
    pub async fn lift(&self, account: &AccountId, address: &str, by: &str) -> Result<(), FeedbackError> {
        let current = self.get(account, address).await?;
        let event = SuppressionLifted {
            account: account.clone(),
            recipient: current.address.clone(),
            by: by.to_owned(),
            id: MessageId::generate().0,
            lifted_at: Timestamp::now(),
        };
        self.log.append(vec![self.record(FeedbackEvent::SuppressionLifted(event))]).await?;
        let gone = self
            .until(|| async {
                let now = self.store.suppression(account, &current.address).await?;
                Ok(now.is_none_or(|s| s.id != current.id).then_some(()))
            })
            .await?;
        gone.ok_or(FeedbackError::Lag(current.address))
    }

    /// Appends entries without waiting (bulk import). Returns how many.
    pub async fn import(&self, account: &AccountId, entries: Vec<NewSuppression>) -> Result<usize, FeedbackError> {
        let n = entries.len();
        let now = Timestamp::now();
        let mut batch = Vec::with_capacity(IMPORT_BATCH.min(n));
        for e in entries {
            let event = RecipientSuppressed {
                account: account.clone(),
                recipient: normalize(&e.address),
                reason: e.reason,
                message_id: None,
                detail: e.detail,
                expires_at: e.expires_at,
                id: MessageId::generate().0,
                suppressed_at: now,
            };
            batch.push(self.record(FeedbackEvent::RecipientSuppressed(event)));
            if batch.len() >= IMPORT_BATCH {
                self.log.append(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.log.append(batch).await?;
        }
        Ok(n)
    }

    /// A page of the entries in force, optionally of one reason.
    pub async fn list(
        &self,
        account: &AccountId,
        reason: Option<SuppressionReason>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Suppression>, FeedbackError> {
        let mut page = self.store.suppressions(account, reason, cursor, limit).await?;
        let now = Timestamp::now();
        page.items.retain(|s| s.active(now));
        Ok(page)
    }

    /// A page of bounces.
    pub async fn bounces(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
        class: Option<BounceClass>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<BounceRow>, FeedbackError> {
        Ok(self.store.bounces(account, from, to, class, cursor, limit).await?)
    }

    /// Polls `check` until it returns `Some` or the wait is over (`Ok(None)`).
    async fn until<T, F, Fut>(&self, mut check: F) -> Result<Option<T>, FeedbackError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, FeedbackError>>,
    {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(v) = check().await? {
                return Ok(Some(v));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
