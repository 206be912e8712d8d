//! Peer processes for the benchmark drivers (`src/bin/`): a child stopped on drop, a free
//! loopback port, waiting for a listener, and Knot serving `example.test` (MX → 127.0.0.1).

use anyhow::Result;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process stopped on drop: `SIGTERM` first, so that nginx's master stops its
/// workers (a `SIGKILL`ed master leaves them running, holding the port and our stdout),
/// then `SIGKILL` after 5 s.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something listens on loopback `port` (up to 30 s).
pub fn wait_port(port: u16) -> Result<()> {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("nothing listens on {port}")
}

/// Knot serving `example.test` (MX `mx.example.test` → 127.0.0.1) from `dir`; its port.
pub fn knot(dir: &Path) -> Result<(Proc, u16)> {
    let port = free_port();
    std::fs::write(
        dir.join("example.test.zone"),
        "$ORIGIN example.test.\n$TTL 3600\n@ SOA ns hostmaster 1 60 60 600 60\n@ NS ns\nns A 127.0.0.1\n@ MX 10 mx\nmx A 127.0.0.1\n",
    )?;
    std::fs::write(
        dir.join("knot.conf"),
        format!(
            "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\ndatabase:\n  storage: \"{d}\"\nzone:\n  - domain: example.test\n    file: \"{d}/example.test.zone\"\n",
            d = dir.display()
        ),
    )?;
    let child = Command::new("knotd")
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    Ok((Proc(child), port))
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name: the state is
/// `[0]`, the parent's pid `[1]`, utime `[11]`, stime `[12]`.
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').ok_or_else(|| anyhow::anyhow!("/proc/PID/stat"))?.1;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU seconds in `fields` ([`stat_fields`]).
fn fields_cpu_seconds(fields: &[String]) -> Result<f64> {
    let tick = |i: usize| -> Result<f64> {
        Ok(fields.get(i).ok_or_else(|| anyhow::anyhow!("/proc/PID/stat too short"))?.parse::<f64>()?)
    };
    Ok((tick(11)? + tick(12)?) / clock_ticks())
}

/// CPU seconds the whole machine has spent busy (every state of `/proc/stat`'s `cpu` line
/// but idle and iowait) and idle, so far.
pub fn machine_cpu_seconds() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or_else(|| anyhow::anyhow!("/proc/stat is empty"))?;
    let ticks: Vec<f64> = line.split_whitespace().skip(1).map(|t| t.parse().unwrap_or(0.0)).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy: f64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    let hz = clock_ticks();
    Ok((busy / hz, idle / hz))
}

/// Clock ticks per second, asked once.
fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&out).trim().parse().unwrap_or(100.0)
    })
}

/// User + system CPU seconds the process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    fields_cpu_seconds(&stat_fields(pid)?)
}

/// User + system CPU seconds of `pid` and its direct children (nginx's master and workers).
pub fn tree_cpu_seconds(pid: u32) -> Result<f64> {
    let mut total = cpu_seconds(pid)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fields) = stat_fields(child) else { continue };
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            total += fields_cpu_seconds(&fields).unwrap_or(0.0);
        }
    }
    Ok(total)
}
