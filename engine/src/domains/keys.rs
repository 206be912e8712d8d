//! DKIM key pairs: generated with aws-lc-rs (RSA-2048, or Ed25519 as an optional second
//! signature) as PKCS#8 PEM, never returned by an API. Their private halves travel sealed
//! in the domains topic ([`super::vault`], ADR 0017). [`KeyStore`] is the directory of
//! private-key files (mode 0600, `<data_dir>/dkim/<domain>/`) that releases before ADR 0017
//! wrote: read once to migrate them into the log, deleted when their key retires.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use herald_schemas::{DkimKey, KeyAlgorithm, Timestamp};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("generating a {0:?} key failed")]
    Generate(KeyAlgorithm),
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Selector of `algorithm` in `slot` (1 or 2): `hd1`/`hd2` for RSA, `he1`/`he2` for Ed25519.
/// The customer's CNAMEs name these, so they never change.
pub fn selector(algorithm: KeyAlgorithm, slot: u8) -> String {
    match algorithm {
        KeyAlgorithm::RsaSha256 => format!("hd{slot}"),
        KeyAlgorithm::Ed25519Sha256 => format!("he{slot}"),
    }
}

/// A fresh key: what the event carries, and the private PEM to store.
pub struct Generated {
    pub key: DkimKey,
    pub pem: String,
}

pub fn generate(algorithm: KeyAlgorithm, slot: u8, now: Timestamp) -> Result<Generated, KeyError> {
    let failed = |_| KeyError::Generate(algorithm);
    let (pkcs8, public) = match algorithm {
        KeyAlgorithm::RsaSha256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(failed)?;
            let pkcs8 = pair.as_der().map_err(failed)?.as_ref().to_vec();
            let spki = pair.public_key().as_der().map_err(failed)?.as_ref().to_vec();
            (pkcs8, spki)
        }
        KeyAlgorithm::Ed25519Sha256 => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().map_err(failed)?;
            let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(failed)?;
            (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
        }
    };
    let selector = selector(algorithm, slot);
    let mut nonce = [0u8; 4];
    aws_lc_rs::rand::fill(&mut nonce).map_err(failed)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Generated {
        key: DkimKey {
            // Unique even for two keys made in the same millisecond (two racing claims): a
            // sealed key is matched to its published key by this name.
            key_file: format!("{selector}-{}-{}.pem", now.millis(), hex::encode(nonce)),
            selector,
            algorithm,
            public_key: b64.encode(public),
            created_at: now,
        },
        pem: pem("PRIVATE KEY", &pkcs8),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Where a node finds private keys: sealed in the domain's state, opened with the vault's
/// keyring; or, for keys from before ADR 0017 not migrated yet, this node's files.
#[derive(Debug, Clone)]
pub struct PrivateKeys {
    pub vault: std::sync::Arc<super::vault::Vault>,
    pub files: KeyStore,
}

/// The directory of private keys, `<data_dir>/dkim`.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KeyStore { dir: dir.into() }
    }

    pub fn path(&self, domain: &str, key_file: &str) -> PathBuf {
        self.dir.join(domain).join(key_file)
    }

    /// Writes a private key durably (temporary file, fsync, rename), mode 0600.
    pub fn write(&self, domain: &str, key_file: &str, pem: &str) -> Result<(), KeyError> {
        let dir = self.dir.join(domain);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        create_private_dir(&self.dir).map_err(io(&self.dir))?;
        create_private_dir(&dir).map_err(io(&dir))?;
        let path = dir.join(key_file);
        let tmp = dir.join(format!(".{key_file}.tmp"));
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).map_err(io(&tmp))?;
            f.write_all(pem.as_bytes()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn read(&self, domain: &str, key_file: &str) -> Result<String, KeyError> {
        let path = self.path(domain, key_file);
        std::fs::read_to_string(&path).map_err(|source| KeyError::Io { path, source })
    }

    /// Deletes a retired key; a missing file is fine.
    pub fn remove(&self, domain: &str, key_file: &str) {
        let path = self.path(domain, key_file);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "removing a retired DKIM key failed");
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::dkim::{KeySpec, Signers};

    #[test]
    fn generated_keys_sign_and_are_stored_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("dkim"));
        let now = Timestamp(1_763_800_000_000);
        for (alg, len) in [(KeyAlgorithm::RsaSha256, 392), (KeyAlgorithm::Ed25519Sha256, 44)] {
            let g = generate(alg, 2, now).unwrap();
            assert_eq!(g.key.public_key.len(), len, "{alg:?}");
            store.write("sender.test", &g.key.key_file, &g.pem).unwrap();
            let path = store.path("sender.test", &g.key.key_file);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            let pem = store.read("sender.test", &g.key.key_file).unwrap();
            let signers =
                Signers::new(&[KeySpec { domain: "sender.test", selector: &g.key.selector, pem: &pem }]).unwrap();
            let (signed, note) = signers.sign(b"From: a@sender.test\r\nSubject: x\r\n\r\nhi\r\n");
            assert!(note.starts_with("signed d=sender.test s="), "{note}");
            assert!(signed.starts_with(b"DKIM-Signature:"));
        }
        assert_eq!(selector(KeyAlgorithm::RsaSha256, 1), "hd1");
        assert_eq!(selector(KeyAlgorithm::Ed25519Sha256, 2), "he2");
    }
}
