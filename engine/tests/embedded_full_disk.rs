//! The embedded log on a disk that fills up, then frees (issue 10, item 7): a failed write
//! must not disable the log until a restart. On a 64 MiB tmpfs (mounted here: the tests run
//! as root, as CI does), appends run until the disk is full; the log then refuses appends
//! at once and says why (what `/healthz` reports); once space is freed it recovers by
//! itself, and every acknowledged record is there, before and after a reopen.

use herald_engine::log::embedded::EmbeddedLog;
use herald_engine::log::{Assignment, EventLog, Record, Topics};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let uid = Command::new("id").arg("-u").output().expect("id");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "this test mounts a tmpfs: run it as root, as CI does"
        );
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn names() -> Vec<String> {
    Topics { prefix: "t".into(), retry_tiers: 1 }.all()
}

async fn count(log: &Arc<dyn EventLog>, topic: &str) -> Vec<u32> {
    let mut c = log.consume("count", &[Assignment { topic: topic.into(), partition: 0 }]).await.unwrap().pop().unwrap();
    let mut ids = Vec::new();
    loop {
        let got = c.poll(64, Duration::from_millis(300)).await.unwrap();
        if got.is_empty() {
            return ids;
        }
        ids.extend(got.iter().map(|r| u32::from_le_bytes(r.value[..4].try_into().unwrap())));
    }
}

fn record(topic: &str, id: u32) -> Record {
    let mut value = vec![0x5Au8; 512 * 1024];
    value[..4].copy_from_slice(&id.to_le_bytes());
    Record { topic: topic.into(), partition: 0, key: "k".into(), value }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_appends_then_the_log_recovers_when_space_is_freed() {
    let fs = Tmpfs::mount("64m");
    let ballast: PathBuf = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 20 << 20]).unwrap();
    let path = fs.path().join("log.redb");
    let topic = Topics { prefix: "t".into(), retry_tiers: 1 }.messages();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&path, &names(), 1).unwrap());

    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut id = 0u32;
    while log.failure().is_none() {
        assert!(Instant::now() < deadline && id < 400, "the disk never filled up");
        if log.append(vec![record(&topic, id)]).await.is_ok() {
            acknowledged.push(id);
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = log.failure().unwrap();
    assert!(why.contains("could not write") || why.contains("cannot write"), "{why}");
    let err = log.append(vec![record(&topic, 9999)]).await.unwrap_err();
    assert!(err.to_string().contains("recovering"), "{err}");

    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.failure().is_some() {
        assert!(Instant::now() < deadline, "still failing after space was freed: {:?}", log.failure());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for next in id..id + 5 {
        log.append(vec![record(&topic, next)]).await.expect("appends work again");
        acknowledged.push(next);
    }
    let stored = count(&log, &topic).await;
    for a in &acknowledged {
        assert!(stored.contains(a), "acknowledged record {a} lost; stored {stored:?}");
    }
    drop(log);
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&path, &names(), 1).unwrap());
    let stored = count(&log, &topic).await;
    for a in &acknowledged {
        assert!(stored.contains(a), "acknowledged record {a} lost after reopen; stored {stored:?}");
    }
}
