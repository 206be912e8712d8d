//! `herald accounts …` and `herald keys …`: clients of a running Herald's `/v1/admin` API
//! with an operator key (`--url`, `--operator-key`, or `HERALD_URL` /
//! `HERALD_OPERATOR_KEY`). Going through the API keeps one writer of the accounts topic and
//! works the same on every backend. `accounts hash-password` and `keys hash` work offline.

use crate::domains_cli::Client;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

/// Where the admin API is and the operator key that opens it.
#[derive(Args)]
pub struct Api {
    /// Base URL of the Herald API.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// An operator key (`[admin] operator_keys`).
    #[arg(long, env = "HERALD_OPERATOR_KEY", global = true)]
    pub operator_key: Option<String>,
}

/// Settings of `accounts create` and `accounts update`.
#[derive(Args, Default)]
pub struct Settings {
    #[arg(long)]
    name: Option<String>,
    /// The `[[pools]]` its mail leaves from.
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    messages_per_day: Option<u64>,
    #[arg(long)]
    messages_per_second: Option<u32>,
    /// `verified` or `any`.
    #[arg(long)]
    from_domains: Option<String>,
    /// Where the bounce and complaint digest goes.
    #[arg(long)]
    report_email: Option<String>,
    /// How often the digest is sent: `90s`, `30m`, `1h`, `1d` (default: hourly).
    #[arg(long, value_parser = interval_secs)]
    report_interval: Option<u32>,
    /// A network allowed to relay over SMTP without AUTH (repeat for several).
    #[arg(long = "relay-network")]
    relay_networks: Vec<String>,
}

/// A duration as whole seconds (`1h` → 3600).
fn interval_secs(text: &str) -> Result<u32, String> {
    let d = herald_engine::shaping::limits::parse_duration(text)?;
    u32::try_from(d.as_secs()).map_err(|_| format!("`{text}` is too long"))
}

impl Settings {
    fn body(self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                m.insert(k.to_owned(), v);
            }
        };
        put("name", json!(self.name));
        put("pool", json!(self.pool));
        put("messages_per_day", json!(self.messages_per_day));
        put("messages_per_second", json!(self.messages_per_second));
        put("from_domains", json!(self.from_domains));
        put("report_email", json!(self.report_email));
        put("report_interval_secs", json!(self.report_interval));
        if !self.relay_networks.is_empty() {
            put("relay_networks", json!(self.relay_networks));
        }
        m
    }
}

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Read a password from stdin (one line) and print its argon2id hash for `smtp_users`.
    HashPassword,
    /// List every account (API-managed and config).
    List,
    /// Show one account as JSON.
    Show { id: String },
    /// Create an account.
    Create {
        /// 1-64 of `a-z 0-9 . _ -` (default: generated).
        id: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change an account's settings (only those given).
    Update {
        id: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Suspend an account: its sends are refused and its queued mail waits.
    Suspend {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a suspended account send again.
    Resume { id: String },
    /// Delete an account: its keys and users stop working, its queued mail is dropped.
    Delete { id: String },
    /// Add an SMTP user (the password is read from stdin, one line) or replace its password.
    AddUser { id: String, username: String },
    /// Remove an SMTP user.
    RemoveUser { id: String, username: String },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Issue an API key; it is printed this once.
    Create {
        account: String,
        /// Scopes: send, read, domains, suppressions, webhooks (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', default_value = "send,read")]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 time after which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List an account's keys (never the keys themselves).
    List { account: String },
    /// Revoke a key by its id.
    Revoke { account: String, key_id: String },
    /// Read a key from stdin and print `sha256:HEX`, for `[admin] operator_keys` entries
    /// (`NAME=sha256:HEX`) that keep the key itself out of the config.
    Hash,
}

fn client(api: &Api) -> anyhow::Result<Client> {
    let Some(key) = api.operator_key.as_deref() else {
        bail!("an operator key is needed: --operator-key or HERALD_OPERATOR_KEY");
    };
    Ok(Client::new(&api.url, key))
}

fn stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).with_context(|| format!("reading the {what} from stdin"))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!line.is_empty(), "empty {what} on stdin");
    Ok(line)
}

fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn accounts(api: &Api, command: AccountsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    if let AccountsCommand::HashPassword = command {
        let hash = herald_ingest::smtp::auth::hash_password(&stdin_line("password")?)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
        println!("{hash}");
        return Ok(());
    }
    let c = client(api)?;
    match command {
        AccountsCommand::HashPassword => unreachable!("handled above"),
        AccountsCommand::List => {
            let v = c.json(Method::GET, "/v1/admin/accounts", None).await?;
            for a in v["accounts"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {:<7} {}",
                    a["id"].as_str().unwrap_or(""),
                    a["status"].as_str().unwrap_or(""),
                    a["source"].as_str().unwrap_or(""),
                    a["name"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        AccountsCommand::Show { id } => {
            print(&c.json(Method::GET, &format!("/v1/admin/accounts/{}", segment(&id)), None).await?)
        }
        AccountsCommand::Create { id, settings } => {
            let mut body = settings.body();
            if let Some(id) = id {
                body.insert("id".into(), json!(id));
            }
            print(&c.json(Method::POST, "/v1/admin/accounts", Some(Value::Object(body))).await?)
        }
        AccountsCommand::Update { id, settings } => {
            let path = format!("/v1/admin/accounts/{}", segment(&id));
            print(&c.json(Method::PATCH, &path, Some(Value::Object(settings.body()))).await?)
        }
        AccountsCommand::Suspend { id, reason } => {
            let path = format!("/v1/admin/accounts/{}/suspend", segment(&id));
            print(&c.json(Method::POST, &path, Some(json!({ "reason": reason }))).await?)
        }
        AccountsCommand::Resume { id } => {
            print(&c.json(Method::POST, &format!("/v1/admin/accounts/{}/resume", segment(&id)), None).await?)
        }
        AccountsCommand::Delete { id } => {
            c.json(Method::DELETE, &format!("/v1/admin/accounts/{}", segment(&id)), None).await?;
            println!("deleted {id}");
            Ok(())
        }
        AccountsCommand::AddUser { id, username } => {
            let body = json!({ "username": username, "password": stdin_line("password")? });
            let path = format!("/v1/admin/accounts/{}/smtp-users", segment(&id));
            print(&c.json(Method::POST, &path, Some(body)).await?)
        }
        AccountsCommand::RemoveUser { id, username } => {
            let path = format!("/v1/admin/accounts/{}/smtp-users/{}", segment(&id), segment(&username));
            c.json(Method::DELETE, &path, None).await?;
            println!("removed {username}");
            Ok(())
        }
    }
}

pub async fn keys(api: &Api, command: KeysCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    if let KeysCommand::Hash = command {
        let digest = herald_engine::accounts::keys::digest(&stdin_line("key")?);
        println!("sha256:{}", herald_engine::accounts::state::hex(&digest));
        return Ok(());
    }
    let c = client(api)?;
    match command {
        KeysCommand::Hash => unreachable!("handled above"),
        KeysCommand::Create { account, scopes, name, expires_at } => {
            let body = json!({ "scopes": scopes, "name": name, "expires_at": expires_at });
            let path = format!("/v1/admin/accounts/{}/keys", segment(&account));
            let v = c.json(Method::POST, &path, Some(body)).await?;
            // The key on stdout alone (for scripts), its description on stderr.
            println!("{}", v["key"].as_str().unwrap_or_default());
            eprintln!(
                "key {} of {account} (scopes: {}); it is shown this once",
                v["key_id"].as_str().unwrap_or(""),
                v["scopes"]
                    .as_array()
                    .map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
            Ok(())
        }
        KeysCommand::List { account } => {
            let v = c.json(Method::GET, &format!("/v1/admin/accounts/{}/keys", segment(&account)), None).await?;
            for k in v["keys"].as_array().into_iter().flatten() {
                let scopes: Vec<&str> =
                    k["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!(
                    "{:<28} {:<12} {:<8} {:<28} {}",
                    k["key_id"].as_str().unwrap_or(""),
                    k["prefix"].as_str().unwrap_or(""),
                    if k["revoked_at"].is_null() { "active" } else { "revoked" },
                    scopes.join(","),
                    k["name"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { account, key_id } => {
            let path = format!("/v1/admin/accounts/{}/keys/{}", segment(&account), segment(&key_id));
            c.json(Method::DELETE, &path, None).await?;
            println!("revoked {key_id}");
            Ok(())
        }
    }
}
