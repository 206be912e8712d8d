//! Webhook endpoints: their state as the fold of their events, and every node's registry of
//! the live ones (refreshed from the projection store, updated at once by local changes).

use super::signing::Secret;
use herald_schemas::{AccountId, Timestamp, WebhookEvent};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// An endpoint as stored (secrets included) and, without the secrets, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub account: AccountId,
    pub url: String,
    /// Subscribed event types; empty: all.
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why it was disabled (a 410 answer), when it was.
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub secret: String,
    /// The previous secret, signing too until `previous_until`.
    pub previous_secret: Option<String>,
    pub previous_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Endpoint {
    /// Whether it takes events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled && (self.events.is_empty() || self.events.iter().any(|e| e == event_type))
    }
}

/// Applies one event to the endpoint's state; `None`: the endpoint does not exist (never
/// created, or deleted). Delivery records leave the state as it is.
pub fn apply(state: Option<Endpoint>, event: &WebhookEvent) -> Option<Endpoint> {
    match event {
        WebhookEvent::EndpointCreated(c) => Some(state.unwrap_or(Endpoint {
            id: c.endpoint_id.clone(),
            account: c.account.clone(),
            url: c.url.clone(),
            events: c.events.clone(),
            description: c.description.clone(),
            enabled: true,
            disabled_reason: None,
            secret: c.secret.clone(),
            previous_secret: None,
            previous_until: None,
            created_at: c.created_at,
            updated_at: c.created_at,
        })),
        WebhookEvent::EndpointUpdated(u) => state.filter(|s| s.account == u.account).map(|mut s| {
            if let Some(url) = &u.url {
                s.url = url.clone();
            }
            if let Some(events) = &u.events {
                s.events = events.clone();
            }
            if let Some(d) = &u.description {
                s.description = d.clone();
            }
            if let Some(enabled) = u.enabled {
                s.enabled = enabled;
                if enabled {
                    s.disabled_reason = None;
                }
            }
            s.updated_at = u.updated_at;
            s
        }),
        WebhookEvent::SecretRotated(r) => state.filter(|s| s.account == r.account).map(|mut s| {
            if s.secret == r.secret {
                return s; // applied already
            }
            s.previous_secret = Some(std::mem::replace(&mut s.secret, r.secret.clone()));
            s.previous_until = Some(r.previous_until);
            s.updated_at = r.rotated_at;
            s
        }),
        WebhookEvent::EndpointDisabled(d) => state.map(|mut s| {
            s.enabled = false;
            s.disabled_reason = Some(d.reason.clone());
            s.updated_at = d.disabled_at;
            s
        }),
        WebhookEvent::EndpointDeleted(d) => state.filter(|s| s.account != d.account),
        WebhookEvent::Attempted(_) | WebhookEvent::Scheduled(_) => state,
    }
}

/// An endpoint ready to send to: its state, its secrets parsed once, and (made by the
/// sender at its first request) its URL checked and parsed as a request target.
#[derive(Debug)]
pub struct Live {
    pub endpoint: Endpoint,
    current: Option<Secret>,
    previous: Option<(Secret, Timestamp)>,
    /// The checked request target, or why the URL is refused (`super::sender`).
    pub(super) target: std::sync::OnceLock<Result<Target, String>>,
}

/// Where an endpoint's requests go, parsed once (`super::sender`).
#[derive(Debug)]
pub(super) struct Target {
    /// The URL, for connecting.
    pub uri: http::Uri,
    /// `scheme://authority`: which idle connections can take its requests.
    pub origin: String,
    /// The `Host` header.
    pub host: http::HeaderValue,
    /// The request target: path and query.
    pub path: http::Uri,
}

impl Live {
    pub fn new(endpoint: Endpoint) -> Live {
        let current = Secret::parse(&endpoint.secret).ok();
        let previous = endpoint
            .previous_secret
            .as_deref()
            .zip(endpoint.previous_until)
            .and_then(|(s, until)| Some((Secret::parse(s).ok()?, until)));
        Live { endpoint, current, previous, target: std::sync::OnceLock::new() }
    }

    /// The secrets that sign at `now`: the current one, and the previous during the overlap.
    pub fn secrets(&self, now: Timestamp) -> impl Iterator<Item = &Secret> {
        let previous = self.previous.as_ref().filter(|(_, until)| *until > now).map(|(s, _)| s);
        self.current.iter().chain(previous)
    }
}

#[derive(Default)]
struct Snapshot {
    by_account: HashMap<AccountId, Vec<Arc<Live>>>,
    by_id: HashMap<String, Arc<Live>>,
}

/// The node's view of every endpoint.
#[derive(Clone, Default)]
pub struct Registry(Arc<RwLock<Snapshot>>);

impl Registry {
    /// Replaces the whole view (a refresh from the store).
    pub fn replace(&self, endpoints: Vec<Endpoint>) {
        let mut snap = Snapshot::default();
        for e in endpoints {
            let live = Arc::new(Live::new(e));
            snap.by_account.entry(live.endpoint.account.clone()).or_default().push(live.clone());
            snap.by_id.insert(live.endpoint.id.clone(), live);
        }
        if let Ok(mut s) = self.0.write() {
            *s = snap;
        }
    }

    /// Puts (or removes, with `None`) one endpoint at once: this node's own changes are
    /// visible before the next refresh.
    pub fn put(&self, id: &str, endpoint: Option<Endpoint>) {
        let Ok(mut s) = self.0.write() else { return };
        if let Some(old) = s.by_id.remove(id) {
            if let Some(list) = s.by_account.get_mut(&old.endpoint.account) {
                list.retain(|l| l.endpoint.id != id);
            }
        }
        if let Some(e) = endpoint {
            let live = Arc::new(Live::new(e));
            s.by_account.entry(live.endpoint.account.clone()).or_default().push(live.clone());
            s.by_id.insert(id.to_owned(), live);
        }
    }

    /// The enabled endpoints of `account` that take `event_type`.
    pub fn subscribers(&self, account: &AccountId, event_type: &str) -> Vec<Arc<Live>> {
        let Ok(s) = self.0.read() else { return vec![] };
        s.by_account
            .get(account)
            .map(|l| l.iter().filter(|e| e.endpoint.wants(event_type)).cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.0.read().ok().and_then(|s| s.by_id.get(id).cloned())
    }

    /// Marks an endpoint disabled here and now (it answered 410).
    pub fn disable(&self, id: &str, reason: &str, at: Timestamp) {
        if let Some(live) = self.get(id) {
            let mut e = live.endpoint.clone();
            e.enabled = false;
            e.disabled_reason = Some(reason.to_owned());
            e.updated_at = at;
            self.put(id, Some(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::{EndpointCreated, EndpointDeleted, EndpointUpdated, SecretRotated};

    fn created() -> WebhookEvent {
        WebhookEvent::EndpointCreated(EndpointCreated {
            account: AccountId("acme".into()),
            endpoint_id: "ep_1".into(),
            url: "https://h.example/x".into(),
            events: vec!["message.delivered".into()],
            description: String::new(),
            secret: Secret::generate(),
            created_at: Timestamp(1),
        })
    }

    #[test]
    fn the_fold_follows_the_events() {
        let s = apply(None, &created()).unwrap();
        assert!(s.wants("message.delivered") && !s.wants("message.bounced"));
        let upd = WebhookEvent::EndpointUpdated(EndpointUpdated {
            account: AccountId("acme".into()),
            endpoint_id: "ep_1".into(),
            url: None,
            events: Some(vec![]),
            description: None,
            enabled: None,
            updated_at: Timestamp(2),
        });
        let s = apply(Some(s), &upd).unwrap();
        assert!(s.wants("message.bounced"), "no event types: every type");
        let first = s.secret.clone();
        let rot = WebhookEvent::SecretRotated(SecretRotated {
            account: AccountId("acme".into()),
            endpoint_id: "ep_1".into(),
            secret: Secret::generate(),
            previous_until: Timestamp(100),
            rotated_at: Timestamp(3),
        });
        let s = apply(Some(s), &rot).unwrap();
        assert_eq!(s.previous_secret.as_deref(), Some(first.as_str()));
        let live = Live::new(s.clone());
        assert_eq!(live.secrets(Timestamp(50)).count(), 2, "both sign during the overlap");
        assert_eq!(live.secrets(Timestamp(100)).count(), 1, "only the new one after it");
        let other = WebhookEvent::EndpointDeleted(EndpointDeleted {
            account: AccountId("other".into()),
            endpoint_id: "ep_1".into(),
            deleted_at: Timestamp(4),
        });
        assert!(apply(Some(s.clone()), &other).is_some(), "another account cannot delete it");
        let del = WebhookEvent::EndpointDeleted(EndpointDeleted {
            account: AccountId("acme".into()),
            endpoint_id: "ep_1".into(),
            deleted_at: Timestamp(4),
        });
        assert!(apply(Some(s), &del).is_none());
    }
}
