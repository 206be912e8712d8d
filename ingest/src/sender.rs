//! Which From domains an account may send from, decided at ingestion on both channels
//! (REST 422 `from_domain_not_verified`, SMTP 550 5.7.1).
//!
//! A From domain is covered by the most specific domain, among it and its parents, that is
//! either a static `[[dkim]]` key's domain (which names the accounts it serves) or a sender
//! domain whose ownership was proven (verified, or verified once and now failing its DNS
//! checks). If that domain belongs to the account, the From domain is allowed; if it belongs
//! to another account, it is refused whatever the policy. A From domain nobody covers is
//! allowed only under [`FromPolicy::Any`].

use herald_engine::accounts::AccountCache;
use herald_engine::domains::cache::DomainCache;
use herald_schemas::{AccountId, FromDomainsPolicy, VerificationStatus};
use std::collections::HashMap;

/// An account's policy for From domains nobody has proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromPolicy {
    /// Only its own verified sender domains (and subdomains) and its static keys' domains.
    Verified,
    /// Any domain, except another account's.
    Any,
}

/// Why a From domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the From domain {domain} is not a verified sender domain of this account; add and verify it with POST /v1/domains"
)]
pub struct NotAuthorized {
    pub domain: String,
}

/// The node's view of who may send from which domain.
#[derive(Default)]
pub struct SenderPolicy {
    /// Sender domains (verified ones count); `None` when sender domains are not in use.
    domains: Option<DomainCache>,
    /// Static `[[dkim]]` key domains (lower-case ASCII) and the accounts they serve.
    static_domains: HashMap<String, Vec<AccountId>>,
    policies: HashMap<AccountId, FromPolicy>,
    /// The accounts' own `from_domains` settings, which win over `policies`.
    accounts: Option<AccountCache>,
}

impl SenderPolicy {
    /// `policies`: each account's policy (an account not listed gets `Verified`).
    pub fn new(
        domains: Option<DomainCache>,
        static_domains: HashMap<String, Vec<AccountId>>,
        policies: HashMap<AccountId, FromPolicy>,
    ) -> Self {
        let static_domains = static_domains.into_iter().map(|(d, a)| (crate::message::ascii_domain(&d), a)).collect();
        SenderPolicy { domains, static_domains, policies, accounts: None }
    }

    /// Takes each account's policy from its settings (`from_domains`); `default` is `any`
    /// for an account a static key names, else `verified`.
    pub fn with_accounts(mut self, accounts: AccountCache) -> Self {
        self.accounts = Some(accounts);
        self
    }

    fn policy(&self, account: &AccountId) -> FromPolicy {
        let own = self.accounts.as_ref().and_then(|c| c.current().account(account).map(|a| a.settings.from_domains));
        match own {
            Some(FromDomainsPolicy::Any) => FromPolicy::Any,
            Some(FromDomainsPolicy::Verified) => FromPolicy::Verified,
            Some(FromDomainsPolicy::Default) => {
                if self.static_domains.values().any(|accounts| accounts.contains(account)) {
                    FromPolicy::Any
                } else {
                    FromPolicy::Verified
                }
            }
            None => self.policies.get(account).copied().unwrap_or(FromPolicy::Verified),
        }
    }

    /// Every account may send from any domain nobody else proved (tests of other stages).
    pub fn permissive(accounts: impl IntoIterator<Item = AccountId>) -> Self {
        SenderPolicy {
            policies: accounts.into_iter().map(|a| (a, FromPolicy::Any)).collect(),
            ..SenderPolicy::default()
        }
    }

    /// Checks every From domain (lower-case ASCII) of a message of `account`.
    pub fn check(&self, account: &AccountId, from_domains: &[String]) -> Result<(), NotAuthorized> {
        let policy = self.policy(account);
        let snapshot = self.domains.as_ref().map(|c| c.current());
        for domain in from_domains {
            let owner = ancestors(domain).find_map(|candidate| {
                if let Some(accounts) = self.static_domains.get(candidate) {
                    return Some(accounts.contains(account));
                }
                let state = snapshot.as_ref()?.domains.get(candidate)?;
                let proven = matches!(state.status, VerificationStatus::Verified | VerificationStatus::Failing);
                (proven && !state.removed).then(|| &state.account == account)
            });
            let allowed = owner.unwrap_or(policy == FromPolicy::Any);
            if !allowed {
                metrics::counter!("herald_ingest_from_domain_refusals_total").increment(1);
                return Err(NotAuthorized { domain: domain.clone() });
            }
        }
        Ok(())
    }
}

/// `a.b.example.org`, `b.example.org`, `example.org`, `org`.
fn ancestors(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |d| d.split_once('.').map(|(_, parent)| parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn static_keys_serve_only_their_accounts() {
        let (acme, other) = (AccountId("acme".into()), AccountId("other".into()));
        let policy = SenderPolicy::new(
            None,
            [("Sender.Test".to_owned(), vec![acme.clone()])].into(),
            [(other.clone(), FromPolicy::Any)].into(),
        );
        assert!(policy.check(&acme, &ids(&["sender.test"])).is_ok());
        assert!(policy.check(&acme, &ids(&["news.sender.test"])).is_ok(), "subdomains are covered");
        assert!(policy.check(&acme, &ids(&["elsewhere.test"])).is_err(), "acme is `verified` by default");
        assert!(policy.check(&other, &ids(&["sender.test"])).is_err(), "another account's domain, even with any");
        assert!(policy.check(&other, &ids(&["x.sender.test"])).is_err());
        assert!(policy.check(&other, &ids(&["elsewhere.test"])).is_ok());
        assert!(policy.check(&other, &ids(&["elsewhere.test", "sender.test"])).is_err(), "every From domain");
    }

    /// A sender domain verified (or verified once, now failing) by one account is refused to
    /// every other, whatever its policy; a pending one proves nothing.
    #[tokio::test]
    async fn verified_sender_domains_belong_to_their_account() {
        use herald_engine::domains::state::apply;
        use herald_engine::store::{embedded::EmbeddedStore, ProjectionStore};
        use herald_schemas::*;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("p.redb")).unwrap();
        let (acme, other) = (AccountId("acme".into()), AccountId("other".into()));
        for (domain, status, offset) in [
            ("victim.test", Some(VerificationStatus::Verified), 1),
            ("broken.test", Some(VerificationStatus::Failing), 2),
            ("claimed.test", None, 3),
        ] {
            let added = DomainEvent::Added(DomainAdded {
                account: other.clone(),
                domain: domain.into(),
                token: "t".into(),
                bounce_label: "bounce".into(),
                tracking_label: "clicks".into(),
                dmarc_rua: None,
                bimi_logo: None,
                keys: vec![],
                request_id: "r".into(),
                added_at: Timestamp(1),
            });
            let mut state = apply(None, &added, offset * 10).unwrap();
            if let Some(status) = status {
                let verified = DomainEvent::Verified(DomainVerified {
                    account: other.clone(),
                    domain: domain.into(),
                    status,
                    checks: vec![],
                    checked_at: Timestamp(2),
                });
                state = apply(Some(&state), &verified, offset * 10 + 1).unwrap();
            }
            store.put_domain(&state).await.unwrap();
        }
        let cache = DomainCache::default();
        cache.refresh(&store).await.unwrap();
        let policy = SenderPolicy::new(
            Some(cache),
            HashMap::new(),
            [(acme.clone(), FromPolicy::Any), (other.clone(), FromPolicy::Verified)].into(),
        );
        assert!(policy.check(&acme, &ids(&["victim.test"])).is_err(), "verified by other");
        assert!(policy.check(&acme, &ids(&["news.victim.test"])).is_err(), "and its subdomains");
        assert!(policy.check(&acme, &ids(&["broken.test"])).is_err(), "ownership was proven once");
        assert!(policy.check(&acme, &ids(&["claimed.test"])).is_ok(), "a pending claim proves nothing");
        assert!(policy.check(&other, &ids(&["news.victim.test", "broken.test"])).is_ok());
        assert!(policy.check(&other, &ids(&["claimed.test"])).is_err(), "not verified yet");
    }

    #[test]
    fn ancestors_walk_up() {
        assert_eq!(ancestors("a.b.test").collect::<Vec<_>>(), vec!["a.b.test", "b.test", "test"]);
    }
}
