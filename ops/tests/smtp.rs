//! SMTP ingestion with real clients: swaks (STARTTLS + AUTH PLAIN, AUTH LOGIN, --pipeline,
//! implicit TLS), Python smtplib (starttls, login, sendmail with a refused recipient) and
//! Postfix as a smart host (relayhost, SASL client auth, TLS) submit to Herald, which
//! delivers to the in-test sink through Knot DNS; the API shows the messages. Raw sessions
//! check the refusals: 530 without AUTH, 538 before TLS, a wrong password, plaintext
//! pipelined after STARTTLS discarded, connection limits, the command timeout, the account
//! rate limit and the AUTH lockout.

mod support;

use std::time::Duration;
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, KEY};
use support::sink::Sink;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const USER: &str = "alice@acme.test";
const PASSWORD: &str = "correct horse";

struct World {
    _knot: Knot,
    sink: Sink,
    herald: support::herald::Running,
    smtp_port: u16,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    world_with(|_| {}).await
}

/// The world with `tweak` applied to Herald's config before it starts.
async fn world_with(tweak: impl FnOnce(&mut herald::config::Config)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (sink, addr) = Sink::start(0).await;
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), Backends::Embedded, vec![]);
    let smtp_port = support::free_port();
    c.smtp.listen = format!("127.0.0.1:{smtp_port}").parse().unwrap();
    c.smtp.hostname = "mx.herald.test".into();
    c.smtp.auth_failure_delay_ms = 100;
    c.accounts[0].smtp_users = vec![herald::config::SmtpUser {
        username: USER.into(),
        password_hash: herald_ingest::smtp::auth::hash_password(PASSWORD).unwrap(),
    }];
    tweak(&mut c);
    let herald = start(c).await;
    World { _knot: knot, sink, herald, smtp_port, _dir: dir }
}

/// Runs a command with a 60 s bound; returns (success, stdout+stderr).
async fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} timed out"))
    .unwrap_or_else(|e| panic!("{program}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

async fn swaks(w: &World, extra: &[&str], to: &str, subject: &str) -> (bool, String) {
    let port = w.smtp_port.to_string();
    let subject = format!("Subject: {subject}");
    let mut args =
        vec!["--server", "127.0.0.1", "--port", &port, "--ehlo", "client.test", "--from", "a@sender.test", "--to", to];
    args.extend(["--header", &subject, "--timeout", "20"]);
    args.extend(extra);
    run("swaks", &args).await
}

fn queued_ids(transcript: &str) -> Vec<String> {
    transcript
        .lines()
        .filter_map(|l| l.split("queued as ").nth(1))
        .flat_map(|ids| ids.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits_with_starttls_auth_plain_login_and_pipelining() {
    let w = world().await;
    let auth = ["--tls", "--auth-user", USER, "--auth-password", PASSWORD];
    let cases: [(&[&str], &str, &str); 3] = [
        (&["--auth", "PLAIN"], "plain@example.test", "swaks-plain"),
        (&["--auth", "LOGIN"], "login@example.test", "swaks-login"),
        (&["--auth", "PLAIN", "--pipeline"], "piped@example.test", "swaks-pipe"),
    ];
    for (mech, to, subject) in cases {
        let args: Vec<&str> = auth.iter().chain(mech.iter()).copied().collect();
        let (ok, transcript) = swaks(&w, &args, to, subject).await;
        assert!(ok, "{transcript}");
        assert!(transcript.contains("235 2.7.0"), "{transcript}");
        let ids = queued_ids(&transcript);
        assert_eq!(ids.len(), 1, "{transcript}");
        let view = w.herald.wait_status(&ids[0], "delivered", 30).await;
        assert_eq!(view["recipient"], to, "{view}");
        let got = w.sink.messages().into_iter().find(|m| m.to.iter().any(|t| t == to)).expect("the sink got it");
        let data = String::from_utf8_lossy(&got.data);
        assert!(data.contains(&format!("Subject: {subject}")), "{data}");
        assert!(
            data.starts_with("Received: from client.test ([127.0.0.1])") && data.contains("with ESMTPSA"),
            "{data}"
        );
        assert_eq!(got.from, "a@sender.test");
    }
    w.herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_sendmail_with_a_refused_recipient() {
    let w = world().await;
    let script = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20)
s.ehlo('py.test'); s.starttls(); s.ehlo('py.test'); s.login(sys.argv[2], sys.argv[3])
msg = "From: Py <a@sender.test>\r\nTo: p1@example.test\r\nSubject: python\r\n\r\nhello from python\r\n"
refused = s.sendmail('a@sender.test', ['p1@example.test', 'bad@@example', 'p2@example.test'], msg)
print('REFUSED', refused)
s.quit()
"#;
    let port = w.smtp_port.to_string();
    let (ok, out) = run("python3", &["-c", script, &port, USER, PASSWORD]).await;
    assert!(ok, "{out}");
    assert!(out.contains("bad@@example") && out.contains("5.1.3"), "{out}");
    let sink = w.sink.clone();
    support::eventually(30, "both recipients delivered", || {
        let sink = sink.clone();
        async move {
            let got: Vec<String> = sink
                .messages()
                .iter()
                .filter(|m| String::from_utf8_lossy(&m.data).contains("Subject: python"))
                .flat_map(|m| m.to.clone())
                .collect();
            (got.contains(&"p1@example.test".to_owned()) && got.contains(&"p2@example.test".to_owned())).then_some(())
        }
    })
    .await;
    let m = w.sink.messages().into_iter().find(|m| m.to.contains(&"p1@example.test".to_owned())).unwrap();
    let data = String::from_utf8_lossy(&m.data);
    assert!(data.contains("Message-ID: <") && data.contains("Date: "), "added when missing: {data}");
    let stats = w.herald.stats(KEY).await;
    assert!(stats.to_string().contains("accepted"), "{stats}");
    w.herald.stop().await;
}

/// Reads one (possibly multi-line) reply.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line)).await.expect("reply in time").unwrap();
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_without_auth_before_tls_and_wrong_password() {
    let w = world().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", w.smtp_port)).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    assert!(reply(&mut rd).await.starts_with("220 mx.herald.test"));
    wr.write_all(b"EHLO raw.test\r\n").await.unwrap();
    let ehlo = reply(&mut rd).await;
    assert!(ehlo.contains("STARTTLS") && ehlo.contains("CHUNKING") && !ehlo.contains("AUTH"), "{ehlo}");
    wr.write_all(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\nAUTH PLAIN AGFAYgBj\r\n").await.unwrap();
    assert!(reply(&mut rd).await.starts_with("250 2.1.0"));
    assert!(reply(&mut rd).await.starts_with("530 5.7.0 Authentication required"));
    assert!(reply(&mut rd).await.starts_with("503 5.5.1"), "AUTH inside a transaction");
    wr.write_all(b"RSET\r\nAUTH PLAIN AGFAYgBj\r\n").await.unwrap();
    reply(&mut rd).await;
    assert!(reply(&mut rd).await.starts_with("538 5.7.11"));

    let (ok, transcript) = swaks(
        &w,
        &["--tls", "--auth", "PLAIN", "--auth-user", USER, "--auth-password", "wrong"],
        "x@example.test",
        "nope",
    )
    .await;
    assert!(!ok && transcript.contains("535 5.7.8"), "{transcript}");
    assert!(w.sink.messages().is_empty());
    w.herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_after_starttls_are_discarded() {
    let w = world().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", w.smtp_port)).await.unwrap();
    let mut text = String::new();
    while !text.contains("220 ") {
        let mut b = [0u8; 512];
        let n = stream.read(&mut b).await.unwrap();
        text.push_str(&String::from_utf8_lossy(&b[..n]));
    }
    stream.write_all(b"EHLO raw.test\r\n").await.unwrap();
    let mut ehlo = String::new();
    while !ehlo.contains("\r\n250 ") {
        let mut b = [0u8; 1024];
        let n = stream.read(&mut b).await.unwrap();
        ehlo.push_str(&String::from_utf8_lossy(&b[..n]));
    }
    // One write: the RSET is plaintext injected before the handshake.
    stream.write_all(b"STARTTLS\r\nRSET\r\n").await.unwrap();
    let mut ready = [0u8; 64];
    let n = stream.read(&mut ready).await.unwrap();
    assert!(String::from_utf8_lossy(&ready[..n]).starts_with("220 2.0.0"), "{}", String::from_utf8_lossy(&ready[..n]));
    // Herald's own opportunistic-TLS connector: it does not check the self-signed certificate.
    let connector = herald_engine::delivery::smtp::Tls::opportunistic().unwrap().connector().clone();
    let tls = connector.connect("mx.herald.test".try_into().unwrap(), stream).await.expect("handshake");
    let mut tls = BufReader::new(tls);
    let mut early = [0u8; 64];
    let nothing = tokio::time::timeout(Duration::from_millis(500), tls.read(&mut early)).await;
    assert!(
        nothing.is_err(),
        "the server answered the injected RSET: {:?}",
        nothing.map(|r| r.map(|n| String::from_utf8_lossy(&early[..n]).into_owned()))
    );
    tls.get_mut().write_all(b"EHLO raw.test\r\n").await.unwrap();
    let ehlo = reply(&mut tls).await;
    assert!(
        ehlo.starts_with("250-mx.herald.test") && ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    w.herald.stop().await;
}

/// A private Postfix instance (ops/scripts/postfix-relay.sh), stopped on drop.
struct Postfix {
    dir: std::path::PathBuf,
    port: u16,
}

impl Postfix {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postfix-relay.sh")
    }

    /// Listens on a free port and relays everything to `[127.0.0.1]:relay_port`, with
    /// `extra` appended to its main.cf.
    fn start(dir: &std::path::Path, relay_port: u16, extra: &str) -> Postfix {
        let port = support::free_port();
        let out = std::process::Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .arg(dir)
            .args([port.to_string(), relay_port.to_string()])
            .env("POSTFIX_EXTRA_MAIN_CF", extra)
            .output()
            .expect("postfix-relay.sh");
        assert!(
            out.status.success(),
            "postfix did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Postfix { dir: dir.to_owned(), port }
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(Self::script()).arg("stop").arg(&self.dir).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_as_a_smart_host_relays_with_sasl_and_tls() {
    let w = world().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("postfix");
    std::fs::create_dir_all(&dir).unwrap();
    // Postfix's table format: the key, whitespace, then the rest of the line is the value.
    let passwords = tmp.path().join("sasl_passwd");
    std::fs::write(&passwords, format!("[127.0.0.1]:{} {USER}:{PASSWORD}\n", w.smtp_port)).unwrap();
    let extra = format!(
        "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:{}\nsmtp_sasl_security_options = noanonymous\n\
         smtp_sasl_tls_security_options = noanonymous\nsmtp_sasl_mechanism_filter = plain, login\n\
         smtp_tls_security_level = encrypt\nsmtp_tls_loglevel = 1\n",
        passwords.display()
    );
    let postfix = tokio::task::block_in_place(|| Postfix::start(&dir, w.smtp_port, &extra));

    // An application hands the message to its local Postfix, which relays it to Herald.
    let port = postfix.port.to_string();
    let (ok, transcript) = run(
        "swaks",
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--ehlo",
            "app.test",
            "--from",
            "a@sender.test",
            "--to",
            "relayed@example.test",
            "--header",
            "Subject: via-postfix",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    let sink = w.sink.clone();
    let got = support::eventually(60, "the relayed message reaches the sink", || {
        let sink = sink.clone();
        async move { sink.messages().into_iter().find(|m| m.to.iter().any(|t| t == "relayed@example.test")) }
    })
    .await;
    let data = String::from_utf8_lossy(&got.data);
    assert!(data.contains("Subject: via-postfix"), "{data}");
    // Herald's trace header: Postfix's HELO name, and TLS plus AUTH (ESMTPSA); Postfix's own
    // Received: follows it.
    assert!(
        data.starts_with("Received: from relay.herald.test ([127.0.0.1])") && data.contains("with ESMTPSA"),
        "{data}"
    );
    assert!(data.contains("by relay.herald.test (Postfix)"), "{data}");
    assert_eq!(got.from, "a@sender.test");

    // Postfix logged Herald's 250 with the message id; the owning account's API shows it.
    let log = postfix.maillog();
    let id = log
        .lines()
        .filter(|l| l.contains("relayed@example.test") && l.contains("status=sent"))
        .find_map(|l| l.split("queued as ").nth(1))
        .map(|rest| rest.trim_end_matches(')').split_whitespace().next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no relay to Herald in the Postfix log:\n{log}"));
    assert!(log.contains("Trusted TLS connection established") || log.contains("TLS connection established"), "{log}");
    let view = w.herald.wait_status(&id, "delivered", 30).await;
    assert_eq!(view["recipient"], "relayed@example.test", "{view}");
    let (status, _) = w.herald.get(support::herald::OTHER_KEY, &format!("/v1/messages/{id}")).await;
    assert_eq!(status, 404, "another account does not see it");
    drop(postfix);
    w.herald.stop().await;
}

/// A raw plaintext connection to `port`, after its greeting (which it returns).
async fn connect(port: u16) -> (BufReader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let greeting = reply(&mut rd).await;
    (rd, wr, greeting)
}

/// A connection that got `220`, once a closed session has freed its slot (the server frees
/// it a moment after the client leaves).
async fn greeted(port: u16) -> (BufReader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf, String) {
    support::eventually(10, "a connection slot", move || async move {
        let c = connect(port).await;
        c.2.starts_with("220 ").then_some(c)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_connection_limits_timeout_rate_limit_and_auth_lockout() {
    let implicit = support::free_port();
    let w = world_with(|c| {
        c.smtp.implicit_tls_listen = Some(format!("127.0.0.1:{implicit}").parse().unwrap());
        c.smtp.max_connections_per_ip = 2;
        c.smtp.command_timeout_secs = 1;
        c.smtp.account_messages_per_second = 1;
        c.smtp.account_burst = 1;
        c.smtp.max_auth_failures = 2;
        c.smtp.allow_plaintext_auth = true;
        // Unauthenticated sessions from loopback are the other account's (smart host).
        c.accounts[1].relay_networks = vec!["127.0.0.0/8".into()];
    })
    .await;

    // Implicit TLS (port 465 style) with AUTH PLAIN, by swaks.
    let port = implicit.to_string();
    let (ok, transcript) = run(
        "swaks",
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--tls-on-connect",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--ehlo",
            "tls.test",
            "--from",
            "a@sender.test",
            "--to",
            "implicit@example.test",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    let ids = queued_ids(&transcript);
    assert_eq!(ids.len(), 1, "{transcript}");
    w.herald.wait_status(&ids[0], "delivered", 30).await;
    let sink = w.sink.clone();
    let got = support::eventually(30, "delivered", || {
        let sink = sink.clone();
        async move { sink.messages().into_iter().find(|m| m.to.iter().any(|t| t == "implicit@example.test")) }
    })
    .await;
    assert!(String::from_utf8_lossy(&got.data).contains("with ESMTPSA"));

    // The account's message rate (1/s, burst 1): the second MAIL at once is 451 4.7.1.
    let (mut rd, mut wr, greeting) = connect(w.smtp_port).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    wr.write_all(b"EHLO raw.test\r\nMAIL FROM:<a@sender.test>\r\nRSET\r\nMAIL FROM:<a@sender.test>\r\nQUIT\r\n")
        .await
        .unwrap();
    reply(&mut rd).await;
    assert!(reply(&mut rd).await.starts_with("250 2.1.0"));
    reply(&mut rd).await;
    let limited = reply(&mut rd).await;
    assert!(limited.starts_with("451 4.7.1"), "{limited}");
    assert!(reply(&mut rd).await.starts_with("221"));
    drop((rd, wr));

    // The command timeout (1 s here): an idle client is told 421 4.4.2 and disconnected.
    let (mut rd, wr, _) = connect(w.smtp_port).await;
    let started = std::time::Instant::now();
    let timeout = reply(&mut rd).await;
    assert!(timeout.starts_with("421 4.4.2"), "{timeout}");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    drop((rd, wr));

    // Two connections per client IP: the third is refused at connect. Closed sessions free
    // their slots a moment after the client leaves, so wait for two greetings first.
    let sp = w.smtp_port;
    let (first, second) = support::eventually(10, "two connection slots free", move || async move {
        let a = connect(sp).await;
        let b = connect(sp).await;
        (a.2.starts_with("220 ") && b.2.starts_with("220 ")).then_some((a, b))
    })
    .await;
    let (_, _, third) = connect(w.smtp_port).await;
    assert!(third.starts_with("421 4.7.0"), "{third}");
    drop((first, second));

    // AUTH lockout after two failures from one IP: the second failure closes with 421, and
    // even the right password is refused afterwards.
    let (mut rd, mut wr, _) = greeted(sp).await;
    use base64::Engine;
    let b64 = |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("\0{u}\0{p}"));
    wr.write_all(format!("EHLO raw.test\r\nAUTH PLAIN {}\r\n", b64(USER, "wrong")).as_bytes()).await.unwrap();
    reply(&mut rd).await;
    assert!(reply(&mut rd).await.starts_with("535 5.7.8"));
    wr.write_all(format!("AUTH PLAIN {}\r\n", b64(USER, "wrong again")).as_bytes()).await.unwrap();
    assert!(reply(&mut rd).await.starts_with("421 4.7.0"));
    drop((rd, wr));
    let (mut rd, mut wr, _) = greeted(sp).await;
    wr.write_all(format!("EHLO raw.test\r\nAUTH PLAIN {}\r\n", b64(USER, PASSWORD)).as_bytes()).await.unwrap();
    reply(&mut rd).await;
    let locked = reply(&mut rd).await;
    assert!(locked.starts_with("421 4.7.0"), "{locked}");
    w.herald.stop().await;
}
