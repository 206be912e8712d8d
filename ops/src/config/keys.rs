//! `[keys]`: the master keys that seal sender-domain private keys in the log
//! (`docs/config.md#keys`, `docs/adr/0017-keys-in-the-log.md`).

use herald_engine::domains::vault::{self, Source, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    /// The keyring file (mode 0600): lines `<id> <base64 of 32 bytes> [open-only]`; the
    /// highest id not marked `open-only` seals, every key opens. Every node of a cluster
    /// needs the same keys. Unset: the `HERALD_MASTER_KEYS` environment variable (same
    /// lines, `;` also separates), else `<data_dir>/master.keys`, generated on first start
    /// (right for one node only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
    /// How often the keyring file is read again, in seconds (rotation without a restart);
    /// 0: only at start.
    pub reload_secs: u64,
}

impl Default for Keys {
    fn default() -> Self {
        Keys { master_key_file: None, reload_secs: 10 }
    }
}

impl Keys {
    /// Where the keyring comes from, given the environment's `HERALD_MASTER_KEYS`.
    pub fn source(&self, data_dir: &Path, env: Option<String>) -> (Source, bool) {
        match (&self.master_key_file, env) {
            (Some(path), _) => (Source::File(path.clone()), false),
            (None, Some(text)) if !text.trim().is_empty() => (Source::Env(text), false),
            _ => (Source::File(data_dir.join("master.keys")), true),
        }
    }

    /// Opens the node's keyring: the configured file, the environment, or the generated
    /// file of a single node (created when missing; then the flag is true).
    pub fn open(&self, data_dir: &Path) -> Result<(Vault, bool), VaultError> {
        let (source, generated) = self.source(data_dir, std::env::var(vault::ENV).ok());
        if let (Source::File(path), true) = (&source, generated) {
            vault::create_file(path)?;
        }
        Ok((Vault::load(source)?, generated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_wins_then_the_environment_then_a_generated_file() {
        let dir = Path::new("/data");
        let keys = Keys { master_key_file: Some("/etc/herald/master.keys".into()), reload_secs: 10 };
        assert!(
            matches!(keys.source(dir, Some("1 x".into())), (Source::File(p), false) if p == Path::new("/etc/herald/master.keys"))
        );
        let keys = Keys::default();
        assert!(matches!(keys.source(dir, Some("1 x".into())), (Source::Env(t), false) if t == "1 x"));
        assert!(
            matches!(keys.source(dir, Some(" ".into())), (Source::File(p), true) if p == Path::new("/data/master.keys"))
        );
        assert!(matches!(keys.source(dir, None), (Source::File(_), true)));
    }
}
