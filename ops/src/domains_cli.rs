//! `herald domains …`: a client of a running Herald's `/v1/domains` API (`--url`,
//! `--api-key`, or `HERALD_URL` / `HERALD_API_KEY`). Going through the API keeps one
//! writer of the domains topic per deployment and works the same on every backend.

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum DomainsCommand {
    /// Add a sender domain (Unicode accepted) and print the records to publish.
    Add {
        domain: String,
        /// `rua=` of the suggested DMARC record (`mailto:dmarc@example.com`).
        #[arg(long)]
        dmarc_rua: Option<String>,
        /// HTTPS URL of an SVG logo for a BIMI record.
        #[arg(long)]
        bimi_logo: Option<String>,
        /// Label of the tracking domain (default `clicks`).
        #[arg(long)]
        tracking_label: Option<String>,
        /// Also sign with an Ed25519 key.
        #[arg(long)]
        ed25519: bool,
    },
    /// List the account's sender domains.
    List,
    /// Show one domain as JSON.
    Show { domain: String },
    /// The records to publish (BIND zone snippet; `--json` for JSON).
    Records {
        domain: String,
        #[arg(long)]
        json: bool,
    },
    /// Check the published records now and record the result.
    Verify { domain: String },
    /// Publish new keys in the idle selector slot (they sign after the propagation delay).
    Rotate { domain: String },
    /// Diagnostics: SPF, DKIM, DMARC, MX, reverse DNS of the sending IPs.
    Check {
        domain: String,
        #[arg(long)]
        json: bool,
    },
    /// Release the domain: Herald stops signing and publishing for it.
    Remove { domain: String },
}

pub struct Client {
    url: String,
    key: String,
    http: reqwest::Client,
}

fn path_segment(domain: &str) -> String {
    form_urlencoded::byte_serialize(domain.as_bytes()).collect()
}

impl Client {
    pub fn new(url: &str, key: &str) -> Self {
        Client { url: url.trim_end_matches('/').to_owned(), key: key.to_owned(), http: reqwest::Client::new() }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("calling {}{path}", self.url))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    pub async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, text) = self.call(method, path, body).await?;
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match (v["error"]["code"].as_str(), v["error"]["message"].as_str()) {
                (Some(code), Some(message)) => bail!("{code}: {message}"),
                _ => bail!("HTTP {status}: {text}"),
            }
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }
}

fn print_checks(checks: &Value) {
    for c in checks.as_array().into_iter().flatten() {
        let result = c["result"].as_str().unwrap_or("?");
        let mark = if result == "ok" { "ok  " } else { "FAIL" };
        println!(
            "{mark} {:<16} {:<12} {}",
            c["record"].as_str().unwrap_or(""),
            result,
            c["message"].as_str().unwrap_or("")
        );
    }
}

pub async fn run(client: &Client, command: DomainsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        DomainsCommand::Add { domain, dmarc_rua, bimi_logo, tracking_label, ed25519 } => {
            let body = json!({ "domain": domain, "dmarc_rua": dmarc_rua, "bimi_logo": bimi_logo, "tracking_label": tracking_label, "ed25519": ed25519 });
            let v = client.json(Method::POST, "/v1/domains", Some(body)).await?;
            let d = v["domain"].as_str().unwrap_or_default().to_owned();
            println!(
                "{d}: {}; publish these records, then run `herald domains verify {d}`:\n",
                v["status"].as_str().unwrap_or("")
            );
            let (_, zone) = client
                .call(Method::GET, &format!("/v1/domains/{}/records?format=zone", path_segment(&d)), None)
                .await?;
            print!("{zone}");
        }
        DomainsCommand::List => {
            let v = client.json(Method::GET, "/v1/domains", None).await?;
            for d in v["domains"].as_array().into_iter().flatten() {
                let active = d["selectors"].as_array().into_iter().flatten().find(|s| s["state"] == "active");
                println!(
                    "{:<40} {:<9} active {}",
                    d["domain"].as_str().unwrap_or(""),
                    d["status"].as_str().unwrap_or(""),
                    active.and_then(|s| s["selector"].as_str()).unwrap_or("-")
                );
            }
        }
        DomainsCommand::Show { domain } => {
            let v = client.json(Method::GET, &format!("/v1/domains/{}", path_segment(&domain)), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DomainsCommand::Records { domain, json } => {
            if json {
                let v =
                    client.json(Method::GET, &format!("/v1/domains/{}/records", path_segment(&domain)), None).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let (status, text) = client
                    .call(Method::GET, &format!("/v1/domains/{}/records?format=zone", path_segment(&domain)), None)
                    .await?;
                if status >= 400 {
                    bail!("HTTP {status}: {text}");
                }
                print!("{text}");
            }
        }
        DomainsCommand::Verify { domain } => {
            let v = client.json(Method::POST, &format!("/v1/domains/{}/verify", path_segment(&domain)), None).await?;
            println!("{}: {}", v["domain"].as_str().unwrap_or(""), v["status"].as_str().unwrap_or(""));
            print_checks(&v["checks"]);
        }
        DomainsCommand::Rotate { domain } => {
            let v = client.json(Method::POST, &format!("/v1/domains/{}/rotate", path_segment(&domain)), None).await?;
            println!(
                "{}: new keys published; they sign from {}",
                v["domain"].as_str().unwrap_or(""),
                v["activates_at"].as_str().unwrap_or("?")
            );
        }
        DomainsCommand::Check { domain, json } => {
            let v = client.json(Method::GET, &format!("/v1/domains/{}/check", path_segment(&domain)), None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{}: {}",
                    v["domain"].as_str().unwrap_or(""),
                    if v["ok"] == true { "all checks pass" } else { "problems found" }
                );
                print_checks(&v["checks"]);
            }
            if v["ok"] != true {
                std::process::exit(1);
            }
        }
        DomainsCommand::Remove { domain } => {
            client.json(Method::DELETE, &format!("/v1/domains/{}", path_segment(&domain)), None).await?;
            println!("{domain}: removed");
        }
    }
    Ok(())
}
