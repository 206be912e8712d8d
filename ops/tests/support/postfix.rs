//! A private Postfix instance (ops/scripts/postfix-relay.sh) as a real MTA peer, stopped
//! on drop: a relay, or (with a resolv.conf of the test's) an MTA that routes by MX.

use std::path::{Path, PathBuf};

pub struct Postfix {
    pub dir: PathBuf,
    pub port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postfix-relay.sh")
}

impl Postfix {
    /// Listens on a free port; relays to `[127.0.0.1]:relay_port` unless `extra` (appended
    /// to main.cf) says otherwise; resolves with `resolv_conf` when given.
    pub fn start(dir: &Path, relay_port: u16, extra: &str, resolv_conf: Option<&Path>) -> Postfix {
        std::fs::create_dir_all(dir).unwrap();
        let port = super::free_port();
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(script()).arg("start").arg(dir).args([port.to_string(), relay_port.to_string()]);
        cmd.env("POSTFIX_EXTRA_MAIN_CF", extra);
        if let Some(r) = resolv_conf {
            cmd.env("POSTFIX_RESOLV_CONF", r);
        }
        let out = cmd.output().expect("postfix-relay.sh");
        assert!(
            out.status.success(),
            "postfix did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Postfix { dir: dir.to_owned(), port }
    }

    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(script()).arg("stop").arg(&self.dir).output();
    }
}
