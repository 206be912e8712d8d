//! Signing with sender-domain keys: a message is signed with its From domain's active
//! key(s) only when that domain is a verified sender domain of the message's account.
//! Otherwise it goes out unsigned and the attempt event says why. Private keys are opened
//! from their sealed halves in the domain's state with this node's keyring (ADR 0017), so
//! the node that signs need not be the one that created the key; a key from before ADR 0017
//! that is not migrated yet is read from this node's key files.

use super::cache::DomainCache;
use super::keys::KeyStore;
use super::vault::Vault;
use crate::delivery::dkim::{KeySpec, Signers};
use herald_schemas::MessageAccepted;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What signing decided for one attempt.
pub struct Signed {
    pub data: Vec<u8>,
    /// For the attempt event: `signed d=… s=… a=…` or `unsigned: <why>`.
    pub note: String,
    /// The bounce domain (`bounce.<domain>`) of the verified sender domain, when the
    /// message asked for bounce tracking: the VERP return path goes there.
    pub bounce_domain: Option<String>,
}

pub struct SenderSigning {
    cache: DomainCache,
    keys: KeyStore,
    vault: Arc<Vault>,
    /// Parsed signers by the keys they use; a rotation changes the keys.
    loaded: Mutex<HashMap<String, Arc<Signers>>>,
}

impl SenderSigning {
    pub fn new(cache: DomainCache, keys: super::keys::PrivateKeys) -> Self {
        let super::keys::PrivateKeys { vault, files } = keys;
        SenderSigning { cache, keys: files, vault, loaded: Mutex::new(HashMap::new()) }
    }

    /// `None` when `from_domain` is nobody's sender domain (static keys or nothing apply).
    /// `body` is the message as it will be sent (rewritten, maybe).
    pub fn sign(&self, msg: &MessageAccepted, body: &[u8], from_domain: &str) -> Option<Signed> {
        let snapshot = self.cache.current();
        let ascii = idna::domain_to_ascii(from_domain).unwrap_or_else(|_| from_domain.to_owned());
        let state = snapshot.domains.get(&ascii)?;
        let unsigned =
            |why: String| Some(Signed { data: body.to_vec(), note: format!("unsigned: {why}"), bounce_domain: None });
        if state.account != msg.account {
            return unsigned(format!("{from_domain} is not a sender domain of account {}", msg.account));
        }
        if !state.is_verified() {
            let status =
                serde_json::to_value(state.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            return unsigned(format!("sender domain {from_domain} is not verified (status {status})"));
        }
        let signers = match self.signers(state) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(domain = from_domain, error = %e, "loading sender-domain keys failed");
                return unsigned(format!("the key of {from_domain} could not be loaded"));
            }
        };
        let (data, note) = signers.sign(body);
        let bounce_domain = msg.options.bounce_tracking.then(|| state.bounce_domain());
        Some(Signed { data, note, bounce_domain })
    }

    fn signers(&self, state: &super::state::DomainState) -> Result<Arc<Signers>, String> {
        let keys = state.signing_keys();
        let id = format!("{}/{}", state.domain, keys.iter().map(|k| k.key_file.as_str()).collect::<Vec<_>>().join(","));
        if let Some(s) = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(s.clone());
        }
        let keyring = self.vault.current();
        let pems = keys
            .iter()
            .map(|k| match state.sealed_key(&k.key_file) {
                Some(sealed) => keyring
                    .open(&state.domain, sealed)
                    .map_err(|e| e.to_string())
                    .and_then(|der| String::from_utf8(der).map_err(|_| "the sealed key is not PEM".to_owned())),
                None => self.keys.read(&state.domain, &k.key_file).map_err(|e| e.to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let specs: Vec<KeySpec> = keys
            .iter()
            .zip(&pems)
            .map(|(k, pem)| KeySpec { domain: &state.domain, selector: &k.selector, pem })
            .collect();
        let signers = Arc::new(Signers::new(&specs)?);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.retain(|k, _| !k.starts_with(&format!("{}/", state.domain)));
        loaded.insert(id, signers.clone());
        Ok(signers)
    }
}
