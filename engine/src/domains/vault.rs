//! Master keys and the sealing of DKIM private keys (ADR 0017). Private keys travel in the
//! domains topic and the projection store, sealed with AES-256-GCM (aws-lc-rs) under a
//! key-encryption key from the node's keyring, so any node holding the keyring can sign for
//! any domain and no node needs a shared disk.
//!
//! The keyring is text, one master key per line: `<id> <base64 of 32 bytes> [open-only]`,
//! `#` comments. Ids are positive integers; the highest id not marked `open-only` seals, and
//! every key opens. Rotation is therefore ordered: a ciphertext under a lower id than the
//! sealing one is re-wrapped by the domain's owner ([`Keyring::needs_rewrap`]), never the
//! other way round, so nodes that are mid-way through a keyring change never undo each
//! other's work. The keyring comes from `[keys] master_key_file` (mode 0600, re-read while
//! running), or the `HERALD_MASTER_KEYS` environment variable, or a file generated on the
//! first start of a single node.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use herald_schemas::SealedKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// The environment variable holding the keyring when no file is configured.
pub const ENV: &str = "HERALD_MASTER_KEYS";

/// Errors of the keyring and of sealing; none carries key material.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VaultError {
    /// The keyring text is malformed (start refused, or a reload ignored).
    #[error("keyring line {line}: {problem}")]
    Parse { line: usize, problem: String },
    #[error("the keyring has no key that may seal (every key is open-only, or there is none)")]
    NoSealingKey,
    #[error("keyring file {path}: {problem}")]
    File { path: PathBuf, problem: String },
    /// The ciphertext names a master key this node's keyring does not hold.
    #[error("master key {0} is not in this node's keyring")]
    UnknownKey(u32),
    /// Wrong key, or a ciphertext altered or moved to another domain or key.
    #[error("the sealed key {key_file} of {domain} does not open under master key {id}")]
    Open { domain: String, key_file: String, id: u32 },
    #[error("sealing failed")]
    Seal,
}

struct MasterKey {
    key: LessSafeKey,
    open_only: bool,
}

/// One version of the keyring.
pub struct Keyring {
    keys: BTreeMap<u32, MasterKey>,
    sealing: u32,
    /// A digest of the text it was parsed from, to tell a changed file.
    digest: Vec<u8>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).field("sealing", &self.sealing).finish()
    }
}

fn aad(domain: &str, key_file: &str) -> Vec<u8> {
    format!("herald-dkim-key\0{domain}\0{key_file}").into_bytes()
}

impl Keyring {
    /// Parses keyring text (lines `<id> <base64 32 bytes> [open-only]`; `;` also separates
    /// entries, for the environment).
    pub fn parse(text: &str) -> Result<Keyring, VaultError> {
        let mut keys = BTreeMap::new();
        let entries = text.lines().enumerate().flat_map(|(i, line)| {
            let uncommented = line.split('#').next().unwrap_or_default();
            uncommented.split(';').map(move |entry| (i, entry.trim()))
        });
        for (i, line) in entries {
            if line.is_empty() {
                continue;
            }
            let bad = |problem: &str| VaultError::Parse { line: i + 1, problem: problem.to_owned() };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, secret, flag) = match fields.as_slice() {
                [id, secret] => (*id, *secret, None),
                [id, secret, flag] => (*id, *secret, Some(*flag)),
                _ => return Err(bad("expected `<id> <base64 key> [open-only]`")),
            };
            let id: u32 = id.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad("the id must be a positive integer"))?;
            let open_only = match flag {
                None => false,
                Some("open-only") => true,
                Some(_) => return Err(bad("the only flag is `open-only`")),
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(secret)
                .map_err(|_| bad("the key is not valid base64"))?;
            if bytes.len() != 32 {
                return Err(bad("the key must be 32 bytes (AES-256), base64-encoded"));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad("not an AES-256 key"))?;
            if keys.insert(id, MasterKey { key: LessSafeKey::new(key), open_only }).is_some() {
                return Err(bad("the id appears twice"));
            }
        }
        let sealing =
            keys.iter().rev().find(|(_, k)| !k.open_only).map(|(id, _)| *id).ok_or(VaultError::NoSealingKey)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref().to_vec();
        Ok(Keyring { keys, sealing, digest })
    }

    /// A keyring line with a fresh random key: `<id> <base64>`.
    pub fn generate_line(id: u32) -> String {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator");
        format!("{id} {}", base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The id that seals.
    pub fn sealing_id(&self) -> u32 {
        self.sealing
    }

    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Seals `secret` (a private key) of `domain`'s key `key_file` under the sealing key.
    pub fn seal(&self, domain: &str, key_file: &str, secret: &[u8]) -> Result<SealedKey, VaultError> {
        let master = &self.keys[&self.sealing];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| VaultError::Seal)?;
        let mut data = secret.to_vec();
        master
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(domain, key_file)), &mut data)
            .map_err(|_| VaultError::Seal)?;
        Ok(SealedKey {
            key_file: key_file.to_owned(),
            master_key_id: self.sealing,
            nonce: nonce.to_vec(),
            ciphertext: data,
        })
    }

    /// Opens a sealed key of `domain`.
    pub fn open(&self, domain: &str, sealed: &SealedKey) -> Result<Vec<u8>, VaultError> {
        let id = sealed.master_key_id;
        let master = self.keys.get(&id).ok_or(VaultError::UnknownKey(id))?;
        let failed = || VaultError::Open { domain: domain.to_owned(), key_file: sealed.key_file.clone(), id };
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| failed())?;
        let mut data = sealed.ciphertext.clone();
        let plain = master
            .key
            .open_in_place(nonce, Aad::from(aad(domain, &sealed.key_file)), &mut data)
            .map_err(|_| failed())?;
        Ok(plain.to_vec())
    }

    /// Whether `sealed` should be sealed again under the sealing key: it is under an older
    /// (lower) id that this keyring still opens. Never towards a lower id, so two nodes
    /// with different keyrings during a rotation cannot re-wrap back and forth.
    pub fn needs_rewrap(&self, sealed: &SealedKey) -> bool {
        sealed.master_key_id < self.sealing && self.keys.contains_key(&sealed.master_key_id)
    }
}

/// Where the keyring comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file (mode 0600), re-read while running.
    File(PathBuf),
    /// Text from the environment ([`ENV`]), fixed for the process's life.
    Env(String),
}

/// The node's current keyring, replaced when its file changes.
pub struct Vault {
    current: RwLock<Arc<Keyring>>,
    source: Source,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("keyring", &*self.current()).finish()
    }
}

fn read_file(path: &Path) -> Result<String, VaultError> {
    let file_err = |problem: String| VaultError::File { path: path.to_owned(), problem };
    let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(file_err(format!("mode {mode:o} lets others read it; chmod 600 it")));
        }
    }
    let _ = meta;
    std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))
}

/// Creates `path` with one fresh key, mode 0600, unless it exists.
pub fn create_file(path: &Path) -> Result<(), VaultError> {
    use std::io::Write;
    let file_err = |e: std::io::Error| VaultError::File { path: path.to_owned(), problem: e.to_string() };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(file_err(e)),
    };
    let text = format!(
        "# Herald master keys (ADR 0017): <id> <base64 32 bytes> [open-only]; the highest id\n\
         # not open-only seals, all open. Every node of a cluster needs the same keys.\n{}\n",
        Keyring::generate_line(1)
    );
    f.write_all(text.as_bytes()).map_err(file_err)?;
    f.sync_all().map_err(file_err)
}

impl Vault {
    /// Loads the keyring from `source`.
    pub fn load(source: Source) -> Result<Vault, VaultError> {
        let text = match &source {
            Source::File(path) => read_file(path)?,
            Source::Env(text) => text.clone(),
        };
        Ok(Vault { current: RwLock::new(Arc::new(Keyring::parse(&text)?)), source })
    }

    /// A vault over a fixed keyring (tools and tests).
    pub fn fixed(text: &str) -> Result<Vault, VaultError> {
        Vault::load(Source::Env(text.to_owned()))
    }

    pub fn current(&self) -> Arc<Keyring> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the file again; `Ok(true)` when the keyring changed. A malformed file leaves
    /// the current keyring in place (and says why).
    pub fn reload(&self) -> Result<bool, VaultError> {
        let Source::File(path) = &self.source else { return Ok(false) };
        let text = read_file(path)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
        if self.current().digest == digest.as_ref() {
            return Ok(false);
        }
        let next = Keyring::parse(&text)?;
        tracing::info!(ids = ?next.ids(), sealing = next.sealing_id(), "master keyring reloaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(true)
    }

    /// Re-reads the keyring file every `interval` until `shutdown`.
    pub async fn run_reloader(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.reload() {
                Ok(true) => metrics::counter!("herald_keys_reloads_total", "outcome" => "changed").increment(1),
                Ok(false) => {}
                Err(e) => {
                    metrics::counter!("herald_keys_reloads_total", "outcome" => "failed").increment(1);
                    tracing::error!(error = %e, "the master keyring could not be reloaded; keeping the previous one");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[&str]) -> Keyring {
        Keyring::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn seals_and_opens_bound_to_domain_and_key() {
        let (a, b) = (Keyring::generate_line(1), Keyring::generate_line(2));
        let k = ring(&[&a]);
        let sealed = k.seal("sender.test", "hd1-1.pem", b"PRIVATE").unwrap();
        assert_eq!(sealed.master_key_id, 1);
        assert_eq!(sealed.ciphertext.len(), 7 + 16, "ciphertext and tag");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"PRIVATE"));
        assert_eq!(k.open("sender.test", &sealed).unwrap(), b"PRIVATE");
        let err = k.open("other.test", &sealed).unwrap_err();
        assert!(matches!(err, VaultError::Open { .. }), "moved to another domain: {err}");
        let moved = SealedKey { key_file: "hd2-1.pem".into(), ..sealed.clone() };
        assert!(matches!(k.open("sender.test", &moved), Err(VaultError::Open { .. })), "another key's slot");
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(k.open("sender.test", &flipped), Err(VaultError::Open { .. })), "tampered");
        let b_only = ring(&[&b.replacen("2 ", "1 ", 1)]);
        assert!(matches!(b_only.open("sender.test", &sealed), Err(VaultError::Open { .. })), "another key, same id");
        assert_eq!(ring(&[&b]).open("sender.test", &sealed), Err(VaultError::UnknownKey(1)));
        assert_ne!(k.seal("sender.test", "hd1-1.pem", b"PRIVATE").unwrap().nonce, sealed.nonce, "fresh nonce");
    }

    #[test]
    fn the_highest_sealing_id_seals_and_rewraps_only_go_up() {
        let (a, b) = (Keyring::generate_line(1), Keyring::generate_line(2));
        let old = ring(&[&a]);
        let staged = ring(&[&a, &format!("{b} open-only")]);
        let promoted = ring(&[&b, &a]);
        let retired = ring(&[&b]);
        assert_eq!((old.sealing_id(), staged.sealing_id(), promoted.sealing_id()), (1, 1, 2));
        let under_1 = old.seal("d.test", "k", b"x").unwrap();
        let under_2 = promoted.seal("d.test", "k", b"x").unwrap();
        assert_eq!(staged.open("d.test", &under_2).unwrap(), b"x", "open-only keys open");
        assert!(promoted.needs_rewrap(&under_1));
        assert!(!promoted.needs_rewrap(&under_2));
        assert!(!staged.needs_rewrap(&under_2), "never back to a lower id");
        assert!(!staged.needs_rewrap(&under_1));
        assert!(!retired.needs_rewrap(&under_1), "a key it cannot open is not re-wrapped");
    }

    #[test]
    fn malformed_keyrings_are_refused_with_the_line() {
        let good = Keyring::generate_line(1);
        let secret = good.split_once(' ').unwrap().1.to_owned();
        let cases = [
            (format!("0 {secret}"), "positive integer"),
            (format!("x {secret}"), "positive integer"),
            ("1 c2hvcnQ=".to_owned(), "32 bytes"),
            ("1 !!!".to_owned(), "base64"),
            (format!("1 {secret} sealing"), "only flag"),
            (format!("{good}\n1 {secret}"), "twice"),
            ("1".to_owned(), "expected"),
        ];
        for (text, want) in cases {
            let err = Keyring::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains(&secret), "no key material in errors: {err}");
        }
        assert_eq!(Keyring::parse("# nothing\n").unwrap_err(), VaultError::NoSealingKey);
        assert_eq!(Keyring::parse(&format!("{good} open-only")).unwrap_err(), VaultError::NoSealingKey);
        let env = format!("{good}; {}", Keyring::generate_line(3));
        assert_eq!(Keyring::parse(&env).unwrap().ids(), vec![1, 3], "`;` separates entries");
    }

    #[test]
    fn files_must_be_private_and_reload_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("master.keys");
        create_file(&path).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        create_file(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first, "an existing file is kept");
        let vault = Vault::load(Source::File(path.clone())).unwrap();
        assert_eq!(vault.current().ids(), vec![1]);
        assert_eq!(vault.reload(), Ok(false));
        std::fs::write(&path, format!("{first}{}\n", Keyring::generate_line(2))).unwrap();
        assert_eq!(vault.reload(), Ok(true));
        assert_eq!(vault.current().sealing_id(), 2);
        std::fs::write(&path, "1 broken\n").unwrap();
        assert!(vault.reload().is_err());
        assert_eq!(vault.current().sealing_id(), 2, "a broken file keeps the previous keyring");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Vault::load(Source::File(path)).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
        }
    }
}
