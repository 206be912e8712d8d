//! Sender-domain commands (add, rotate, verify, update, remove) and queries, shared by the
//! REST API, the CLI and the periodic task. A command checks the projection, appends its
//! event to `<prefix>.domains` (keyed by the domain), then waits until the projection
//! shows the effect, so the caller reads its own write. Contested claims are settled by
//! the projection: the first `DomainAdded` in the partition wins.

use super::cache::DomainCache;
use super::keys::{self, KeyStore, PrivateKeys};
use super::name::{self, NameError};
use super::records::{self, CustomerRecord, ServiceZone};
use super::state::{self, DomainState, RotationPolicy, Step};
use super::vault::Vault;
use super::{check, lookup, verify};
use crate::log::{EventLog, Record};
use crate::routing::Router;
use crate::store::ProjectionStore;
use herald_schemas::*;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of sender-domain commands; each says which reply it becomes.
#[derive(Debug, Error)]
pub enum DomainError {
    /// 422 `invalid_domain` / `public_suffix`.
    #[error(transparent)]
    Name(#[from] NameError),
    /// 409 `domain_claimed`: another account holds it.
    #[error("{0} is already a sender domain of another account")]
    Claimed(String),
    /// 404 `domain_not_found` (also for another account's domain: nothing leaks).
    #[error("{0} is not a sender domain of this account")]
    NotFound(String),
    /// 409 `rotation_in_progress`.
    #[error("cannot rotate now: {0}")]
    RotationInProgress(String),
    /// 422 `invalid_request`.
    #[error("{0}")]
    Invalid(String),
    /// 503 `log_unavailable`: nothing was appended.
    #[error("event log: {0}")]
    Log(#[from] crate::log::LogError),
    /// 503 `store_unavailable`.
    #[error("projection store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// 503 `projection_lag`: the event is in the log; its effect will show shortly.
    #[error("the change for {0} is recorded but not yet visible; read it again shortly")]
    Lag(String),
    /// 500 `internal`.
    #[error("{0}")]
    Internal(String),
}

/// Operator settings of sender domains (`[dns]` and `[domains]`).
#[derive(Debug, Clone)]
pub struct DomainSettings {
    pub zone: ServiceZone,
    pub rotation: RotationPolicy,
    /// Add an Ed25519 key beside RSA to new domains.
    pub ed25519: bool,
    pub bounce_label: String,
    pub tracking_label: String,
    pub sending_ips: Vec<IpAddr>,
    /// Resolvers for verification (ip:port); empty: the system's.
    pub resolvers: Vec<SocketAddr>,
    /// Herald's own DNS server, asked directly about names in its zone (diagnostics).
    pub own_dns: Option<SocketAddr>,
    pub resolver_timeout: Duration,
    /// How often a domain is verified again by the periodic task.
    pub reverify: Duration,
    /// How long a command waits for the projection to show its event.
    pub wait: Duration,
}

/// A request to add a domain.
#[derive(Debug, Clone, Default)]
pub struct AddDomain {
    pub domain: String,
    pub dmarc_rua: Option<String>,
    pub bimi_logo: Option<String>,
    pub tracking_label: Option<String>,
    pub ed25519: Option<bool>,
}

/// A change of a domain's settings; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct UpdateDomain {
    pub tracking_label: Option<String>,
    pub dmarc_rua: Option<Option<String>>,
    pub bimi_logo: Option<Option<String>>,
}

pub struct Domains {
    log: Arc<dyn EventLog>,
    topic: String,
    router: Router,
    store: Arc<dyn ProjectionStore>,
    /// Key files from before ADR 0017 (migrated into the log, removed on retirement).
    keys: KeyStore,
    vault: Arc<Vault>,
    settings: DomainSettings,
    resolver: hickory_resolver::TokioResolver,
    cache: DomainCache,
}

/// What [`Domains::reseal`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reseal {
    /// Seal published keys that have no sealed half yet from this node's key files.
    MigrateFiles,
    /// Seal again the keys sealed under an older master key.
    Rewrap,
}

fn token(domain: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, domain.as_bytes());
    hex::encode(&digest.as_ref()[..8])
}

fn check_label(label: &str, what: &str) -> Result<String, DomainError> {
    let l = label.trim().to_ascii_lowercase();
    let ok = !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-');
    if ok {
        Ok(l)
    } else {
        Err(DomainError::Invalid(format!("{what} `{label}` is not a DNS label (letters, digits, hyphens)")))
    }
}

fn check_rua(rua: &Option<String>) -> Result<(), DomainError> {
    match rua {
        Some(r) if !r.trim().to_ascii_lowercase().starts_with("mailto:") || r.contains([';', ' ', '"']) => {
            Err(DomainError::Invalid(format!("dmarc_rua `{r}` must be a mailto: URI")))
        }
        _ => Ok(()),
    }
}

fn check_logo(logo: &Option<String>) -> Result<(), DomainError> {
    match logo {
        Some(l) if !l.starts_with("https://") || l.contains([';', ' ', '"']) => {
            Err(DomainError::Invalid(format!("bimi_logo `{l}` must be an https:// URL of an SVG")))
        }
        _ => Ok(()),
    }
}

impl Domains {
    pub fn new(
        log: Arc<dyn EventLog>,
        topic: String,
        router: Router,
        store: Arc<dyn ProjectionStore>,
        keys: PrivateKeys,
        settings: DomainSettings,
        cache: DomainCache,
    ) -> Result<Self, String> {
        let resolver = lookup::resolver(&settings.resolvers, settings.resolver_timeout)?;
        let PrivateKeys { vault, files: keys } = keys;
        Ok(Domains { log, topic, router, store, keys, vault, settings, resolver, cache })
    }

    pub fn settings(&self) -> &DomainSettings {
        &self.settings
    }

    pub fn cache(&self) -> &DomainCache {
        &self.cache
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    async fn append(&self, event: DomainEvent) -> Result<(), DomainError> {
        self.append_all(vec![event]).await
    }

    /// Appends events of one domain in one call: same partition, in order.
    async fn append_all(&self, events: Vec<DomainEvent>) -> Result<(), DomainError> {
        let records = events
            .into_iter()
            .map(|event| {
                let domain = event.domain().to_owned();
                Record {
                    topic: self.topic.clone(),
                    partition: self.router.key_partition(&domain),
                    key: domain,
                    value: encode(&Event::Domain(event)),
                }
            })
            .collect();
        self.log.append(records).await?;
        Ok(())
    }

    fn sealed_event(s: &DomainState, keys: Vec<SealedKey>) -> DomainEvent {
        DomainEvent::KeysSealed(DomainKeysSealed {
            account: s.account.clone(),
            domain: s.domain.clone(),
            keys,
            sealed_at: Timestamp::now(),
        })
    }

    /// Waits until the stored state of `domain` satisfies `done`.
    async fn wait_for(
        &self,
        domain: &str,
        done: impl Fn(Option<&DomainState>) -> bool,
    ) -> Result<Option<DomainState>, DomainError> {
        let deadline = Instant::now() + self.settings.wait;
        loop {
            let current = self.store.domain(domain).await?;
            if done(current.as_ref()) {
                self.cache.changed.notify_one();
                return Ok(current);
            }
            if Instant::now() >= deadline {
                return Err(DomainError::Lag(domain.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The live domain `name` of `account`, or `NotFound`.
    pub async fn get(&self, account: &AccountId, name: &str) -> Result<DomainState, DomainError> {
        let n = name::normalize(name).map_err(|_| DomainError::NotFound(name.to_owned()))?;
        match self.store.domain(&n.ascii).await? {
            Some(s) if !s.removed && &s.account == account => Ok(s),
            _ => Err(DomainError::NotFound(n.ascii)),
        }
    }

    pub async fn list(&self, account: &AccountId) -> Result<Vec<DomainState>, DomainError> {
        let mut all: Vec<DomainState> =
            self.store.domains().await?.into_iter().filter(|d| !d.removed && &d.account == account).collect();
        all.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(all)
    }

    /// Fresh keys, and their private halves sealed under the current master key.
    fn generate(
        &self,
        domain: &str,
        slot: u8,
        algorithms: &[KeyAlgorithm],
    ) -> Result<(Vec<DkimKey>, Vec<SealedKey>), DomainError> {
        let now = Timestamp::now();
        let keyring = self.vault.current();
        let (mut keys, mut sealed) = (vec![], vec![]);
        for alg in algorithms {
            let g = keys::generate(*alg, slot, now).map_err(|e| DomainError::Internal(e.to_string()))?;
            let s = keyring
                .seal(domain, &g.key.key_file, g.pem.as_bytes())
                .map_err(|e| DomainError::Internal(e.to_string()))?;
            keys.push(g.key);
            sealed.push(s);
        }
        metrics::counter!("herald_domain_keys_sealed_total", "reason" => "new").increment(keys.len() as u64);
        Ok((keys, sealed))
    }

    /// Adds a sender domain. `Ok((state, true))` when this call created it, `(state,
    /// false)` when the account already had it.
    pub async fn add(&self, account: &AccountId, req: AddDomain) -> Result<(DomainState, bool), DomainError> {
        let n = name::normalize(&req.domain)?;
        if self.settings.zone.contains(&n.ascii) {
            return Err(DomainError::Invalid(format!("{} is inside Herald's own zone", n.ascii)));
        }
        let tracking_label =
            check_label(req.tracking_label.as_deref().unwrap_or(&self.settings.tracking_label), "tracking_label")?;
        check_rua(&req.dmarc_rua)?;
        check_logo(&req.bimi_logo)?;
        match self.store.domain(&n.ascii).await? {
            Some(s) if !s.removed && &s.account == account => return Ok((s, false)),
            Some(s) if !s.removed => return Err(DomainError::Claimed(n.ascii)),
            _ => {}
        }
        let mut algorithms = vec![KeyAlgorithm::RsaSha256];
        if req.ed25519.unwrap_or(self.settings.ed25519) {
            algorithms.push(KeyAlgorithm::Ed25519Sha256);
        }
        let (keys, sealed) = self.generate(&n.ascii, 1, &algorithms)?;
        let request_id = MessageId::generate().0;
        let added = DomainAdded {
            account: account.clone(),
            domain: n.ascii.clone(),
            token: token(&n.ascii),
            bounce_label: self.settings.bounce_label.clone(),
            tracking_label,
            dmarc_rua: req.dmarc_rua,
            bimi_logo: req.bimi_logo,
            keys,
            request_id: request_id.clone(),
            added_at: Timestamp::now(),
        };
        // The claim and its sealed keys in one append: in order, on the domain's partition.
        let first = sealed.first().map(|k| k.key_file.clone()).unwrap_or_default();
        let seal = DomainEvent::KeysSealed(DomainKeysSealed {
            account: account.clone(),
            domain: n.ascii.clone(),
            keys: sealed,
            sealed_at: added.added_at,
        });
        self.append_all(vec![DomainEvent::Added(added), seal]).await?;
        let state = self
            .wait_for(&n.ascii, |s| {
                s.is_some_and(|s| !s.removed && (s.request_id != request_id || s.sealed_key(&first).is_some()))
            })
            .await?
            .ok_or_else(|| DomainError::Lag(n.ascii.clone()))?;
        if state.request_id == request_id {
            tracing::info!(domain = %n.ascii, account = %account, "sender domain added");
            return Ok((state, true));
        }
        if &state.account == account {
            Ok((state, false))
        } else {
            Err(DomainError::Claimed(n.ascii))
        }
    }

    /// Publishes new keys in `slot`; they sign after the propagation delay.
    async fn publish(&self, s: &DomainState, slot: u8) -> Result<DomainState, DomainError> {
        let algorithms = s.algorithms();
        let (keys, sealed) = self.generate(&s.domain, slot, &algorithms)?;
        let now = Timestamp::now();
        let published = DomainEvent::KeysPublished(DomainKeysPublished {
            account: s.account.clone(),
            domain: s.domain.clone(),
            slot,
            keys,
            published_at: now,
            activate_at: now.saturating_add(self.settings.rotation.propagation_delay),
        });
        let first = sealed.first().map(|k| k.key_file.clone()).unwrap_or_default();
        self.append_all(vec![published, Self::sealed_event(s, sealed)]).await?;
        // Done when the new key is published and sealed, or when the publication was refused.
        let done = self
            .wait_for(&s.domain, |x| {
                x.is_some_and(|x| {
                    x.position > s.position
                        && (x.sealed_key(&first).is_some() || !x.published().any(|(_, k)| k.key_file == first))
                })
            })
            .await?
            .ok_or_else(|| DomainError::Lag(s.domain.clone()))?;
        tracing::info!(domain = %s.domain, slot, "DKIM keys published");
        Ok(done)
    }

    /// Manual rotation: publishes new keys in the idle slot now.
    pub async fn rotate(&self, account: &AccountId, name: &str) -> Result<DomainState, DomainError> {
        let s = self.get(account, name).await?;
        let slot = state::can_rotate(&s).map_err(DomainError::RotationInProgress)?;
        self.publish(&s, slot).await
    }

    /// Runs one rotation step (the periodic task).
    pub async fn step(&self, s: &DomainState, step: Step) -> Result<DomainState, DomainError> {
        let now = Timestamp::now();
        let event = match step {
            Step::Publish { slot } => return self.publish(s, slot).await,
            Step::Activate { slot } => DomainEvent::KeysActivated(DomainKeysActivated {
                account: s.account.clone(),
                domain: s.domain.clone(),
                slot,
                activated_at: now,
                retire_at: now.saturating_add(self.settings.rotation.grace),
            }),
            Step::Retire { slot } => DomainEvent::KeysRetired(DomainKeysRetired {
                account: s.account.clone(),
                domain: s.domain.clone(),
                slot,
                retired_at: now,
            }),
        };
        self.append(event).await?;
        let done = self
            .wait_for(&s.domain, |x| x.is_some_and(|x| x.position > s.position))
            .await?
            .ok_or_else(|| DomainError::Lag(s.domain.clone()))?;
        if let Step::Retire { slot } = step {
            let index = if slot == 2 { 1 } else { 0 };
            for k in &s.slots[index] {
                if !done.published().any(|(_, p)| p.key_file == k.key_file) {
                    self.keys.remove(&s.domain, &k.key_file);
                }
            }
        }
        tracing::info!(domain = %s.domain, ?step, "rotation step");
        Ok(done)
    }

    /// Resolves every record now through the service's long-lived resolver (its cache may
    /// answer: fast, but up to a TTL stale).
    pub async fn findings(&self, s: &DomainState) -> Vec<RecordCheck> {
        verify::verify(&self.resolver, &self.settings.zone, s).await
    }

    /// Resolves every record through a resolver built for this call (empty cache), so a
    /// record the customer just fixed (or broke) is seen at once. Verification, on request
    /// and periodic, uses this; the configured resolvers still cache upstream.
    pub async fn findings_cold(&self, s: &DomainState) -> Result<Vec<RecordCheck>, String> {
        let r = lookup::resolver(&self.settings.resolvers, self.settings.resolver_timeout)?;
        Ok(verify::verify(&r, &self.settings.zone, s).await)
    }

    /// Verifies `name` and records the result (always, on request). Resolves with an empty
    /// cache: the customer has usually just changed their records.
    pub async fn verify(&self, account: &AccountId, name: &str) -> Result<DomainState, DomainError> {
        let s = self.get(account, name).await?;
        let checks = self.findings_cold(&s).await.map_err(DomainError::Internal)?;
        self.record_verification(&s, checks, true).await
    }

    /// Appends `DomainVerified` for `checks` when `always`, or when the status or the
    /// findings changed (the periodic re-check).
    pub async fn record_verification(
        &self,
        s: &DomainState,
        checks: Vec<RecordCheck>,
        always: bool,
    ) -> Result<DomainState, DomainError> {
        let status = state::next_status(s.status, &checks);
        if !always && status == s.status && checks == s.checks {
            return Ok(s.clone());
        }
        if status != s.status {
            tracing::info!(domain = %s.domain, from = ?s.status, to = ?status, "sender domain status changed");
            metrics::counter!("herald_domain_status_changes_total", "to" => status_label(status)).increment(1);
        }
        self.append(DomainEvent::Verified(DomainVerified {
            account: s.account.clone(),
            domain: s.domain.clone(),
            status,
            checks,
            checked_at: Timestamp::now(),
        }))
        .await?;
        self.wait_for(&s.domain, |x| x.is_some_and(|x| x.position > s.position))
            .await?
            .ok_or_else(|| DomainError::Lag(s.domain.clone()))
    }

    pub async fn update(&self, account: &AccountId, name: &str, req: UpdateDomain) -> Result<DomainState, DomainError> {
        let s = self.get(account, name).await?;
        let tracking_label = match &req.tracking_label {
            Some(l) => check_label(l, "tracking_label")?,
            None => s.tracking_label.clone(),
        };
        let dmarc_rua = req.dmarc_rua.unwrap_or_else(|| s.dmarc_rua.clone());
        let bimi_logo = req.bimi_logo.unwrap_or_else(|| s.bimi_logo.clone());
        check_rua(&dmarc_rua)?;
        check_logo(&bimi_logo)?;
        self.append(DomainEvent::Updated(DomainUpdated {
            account: s.account.clone(),
            domain: s.domain.clone(),
            tracking_label,
            dmarc_rua,
            bimi_logo,
            updated_at: Timestamp::now(),
        }))
        .await?;
        self.wait_for(&s.domain, |x| x.is_some_and(|x| x.position > s.position))
            .await?
            .ok_or_else(|| DomainError::Lag(s.domain.clone()))
    }

    pub async fn remove(&self, account: &AccountId, name: &str) -> Result<(), DomainError> {
        let s = self.get(account, name).await?;
        self.append(DomainEvent::Removed(DomainRemoved {
            account: s.account.clone(),
            domain: s.domain.clone(),
            removed_at: Timestamp::now(),
        }))
        .await?;
        self.wait_for(&s.domain, |x| x.is_some_and(|x| x.removed)).await?;
        for (_, k) in s.published() {
            self.keys.remove(&s.domain, &k.key_file);
        }
        tracing::info!(domain = %s.domain, account = %account, "sender domain removed");
        Ok(())
    }

    pub fn records(&self, s: &DomainState) -> Vec<CustomerRecord> {
        records::records(s, &self.settings.zone)
    }

    /// Diagnostics (`herald domains check`, `GET …/check`).
    pub async fn check(&self, account: &AccountId, name: &str) -> Result<Vec<RecordCheck>, DomainError> {
        let s = self.get(account, name).await?;
        let own = match self.settings.own_dns {
            Some(addr) => lookup::resolver(&[addr], self.settings.resolver_timeout).map_err(DomainError::Internal)?,
            None => lookup::resolver(&self.settings.resolvers, self.settings.resolver_timeout)
                .map_err(DomainError::Internal)?,
        };
        let general = lookup::resolver(&self.settings.resolvers, self.settings.resolver_timeout)
            .map_err(DomainError::Internal)?;
        let r = check::Resolvers { general: &general, own: &own };
        Ok(check::diagnose(&r, &self.settings.zone, &s, &self.settings.sending_ips).await)
    }

    /// Seals `s`'s published keys again where `how` asks: from this node's key files
    /// (migration from before ADR 0017), or under the newer master key (re-wrap). Appends
    /// one `DomainKeysSealed` when something changed and returns the state that shows it.
    pub async fn reseal(&self, s: &DomainState, how: Reseal) -> Result<Option<DomainState>, DomainError> {
        let keyring = self.vault.current();
        let internal = |e: super::vault::VaultError| DomainError::Internal(e.to_string());
        let mut resealed = vec![];
        for (_, key) in s.published() {
            match (s.sealed_key(&key.key_file), how) {
                (Some(sealed), Reseal::Rewrap) if keyring.needs_rewrap(sealed) => {
                    let secret = keyring.open(&s.domain, sealed).map_err(internal)?;
                    resealed.push(keyring.seal(&s.domain, &key.key_file, &secret).map_err(internal)?);
                }
                (None, Reseal::MigrateFiles) => match self.keys.read(&s.domain, &key.key_file) {
                    Ok(pem) => resealed.push(keyring.seal(&s.domain, &key.key_file, pem.as_bytes()).map_err(internal)?),
                    Err(_) => continue, // another node created it, or it is lost: nothing to migrate here
                },
                _ => {}
            }
        }
        if resealed.is_empty() {
            return Ok(None);
        }
        let reason = if how == Reseal::Rewrap { "rewrapped" } else { "migrated" };
        metrics::counter!("herald_domain_keys_sealed_total", "reason" => reason).increment(resealed.len() as u64);
        let (files, id) = (resealed.iter().map(|k| k.key_file.clone()).collect::<Vec<_>>(), keyring.sealing_id());
        self.append(Self::sealed_event(s, resealed)).await?;
        let done = self
            .wait_for(&s.domain, |x| {
                x.is_some_and(|x| x.position > s.position && files.iter().all(|f| x.sealed_key(f).is_some()))
            })
            .await?;
        tracing::info!(domain = %s.domain, keys = ?files, master_key = id, reason, "DKIM keys sealed");
        Ok(done)
    }

    /// Migration at start: seals every published key that has no sealed half yet from this
    /// node's `<data_dir>/dkim` files. Returns how many domains it sealed keys of.
    pub async fn migrate_key_files(&self) -> Result<usize, DomainError> {
        let mut migrated = 0;
        for s in self.store.domains().await? {
            if s.removed || s.published().all(|(_, k)| s.sealed_key(&k.key_file).is_some()) {
                continue;
            }
            if self.reseal(&s, Reseal::MigrateFiles).await?.is_some() {
                migrated += 1;
            }
        }
        Ok(migrated)
    }

    /// One pass of the periodic task over the domains whose partition `owns` accepts:
    /// re-wraps under a newer master key, due rotation steps, then re-verification when due.
    pub async fn maintain(&self, owns: impl Fn(u32) -> bool) -> Result<(), DomainError> {
        for s in self.store.domains().await? {
            if s.removed || !owns(self.router.key_partition(&s.domain)) {
                continue;
            }
            let now = Timestamp::now();
            let mut current = s;
            match self.reseal(&current, Reseal::Rewrap).await {
                Ok(Some(next)) => current = next,
                Ok(None) => {}
                Err(e) => tracing::warn!(domain = %current.domain, error = %e, "re-wrapping DKIM keys failed"),
            }
            if let Some(step) = state::due_step(&current, now, &self.settings.rotation) {
                match self.step(&current, step).await {
                    Ok(next) => current = next,
                    Err(e) => {
                        tracing::warn!(domain = %current.domain, error = %e, "rotation step failed");
                        continue;
                    }
                }
            }
            let due = current.checked_at.is_none_or(|t| now >= t.saturating_add(self.settings.reverify));
            if due {
                let checks = match self.findings_cold(&current).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(domain = %current.domain, error = %e, "re-verification failed");
                        continue;
                    }
                };
                if let Err(e) = self.record_verification(&current, checks, false).await {
                    tracing::warn!(domain = %current.domain, error = %e, "re-verification failed");
                }
            }
        }
        Ok(())
    }
}

pub fn status_label(s: VerificationStatus) -> &'static str {
    match s {
        VerificationStatus::Pending => "pending",
        VerificationStatus::Verified => "verified",
        VerificationStatus::Failing => "failing",
    }
}

/// Runs [`Domains::maintain`] every `interval` until `shutdown`.
pub async fn maintenance_loop(
    domains: Arc<Domains>,
    topic: String,
    owned: crate::consumer::Owned,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // The partitions of the domains topic this node owns right now (they move with the
        // consumer group).
        if let Err(e) = domains.maintain(|p| owned.contains(&topic, p)).await {
            tracing::warn!(error = %e, "sender-domain maintenance failed");
        }
    }
}
