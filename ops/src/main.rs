//! `herald`: the command line.

use clap::{Parser, Subcommand};
use herald::config::Config;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: per-thread free lists without glibc's arena locks
/// and consolidation, which took an eighth of the tracking server's CPU (`docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in `mimalloc.h`; the Rust
/// bindings name only the older options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory freed stays with mimalloc before it goes back to the OS: 10 s rather
/// than mimalloc's 1 s. Under a steady load freed memory is reused within seconds; with a
/// 1 s delay it was returned and faulted back in (a page-fault and page-clearing cost of
/// 5–9 % of the webhook drain's CPU, `docs/benchmarks.md`). An idle node still gives its
/// memory back, 10 s later. `MIMALLOC_PURGE_DELAY` in the environment wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option of the allocator linked in; any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
}

#[derive(Parser)]
#[command(name = "herald", version, about = "Event-sourced email delivery engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingestion, delivery workers, projector and the API in one process.
    Serve {
        /// TOML configuration; without it, the defaults (embedded backends, no accounts).
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Accounts and SMTP users, through a running Herald's admin API (operator key).
    Accounts {
        #[command(flatten)]
        api: herald::accounts_cli::Api,
        #[command(subcommand)]
        command: herald::accounts_cli::AccountsCommand,
    },
    /// API keys of accounts, through a running Herald's admin API (operator key).
    Keys {
        #[command(flatten)]
        api: herald::accounts_cli::Api,
        #[command(subcommand)]
        command: herald::accounts_cli::KeysCommand,
    },
    /// Sender domains, through a running Herald's API (`docs/sender-domains.md`).
    Domains {
        /// Base URL of the Herald API.
        #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The account's API key.
        #[arg(long, env = "HERALD_API_KEY")]
        api_key: String,
        #[command(subcommand)]
        command: herald::domains_cli::DomainsCommand,
    },
    /// Rebuild a projection from the log (docs/operations.md, "Backup and replay"). With the
    /// embedded backends, stop `herald serve` first.
    Replay {
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
        /// The projection to rebuild.
        #[arg(long, value_enum)]
        projection: herald::replay::Projection,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a configuration file (and load its DKIM keys).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the default configuration as TOML.
    Default,
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,herald=info,hickory_server=warn".into()),
        )
        // Logs go to stderr, so command output on stdout (`herald domains show`, `config
        // default`, ...) stays clean for pipes; colours only on a terminal.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Accounts { api, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(herald::accounts_cli::accounts(&api, command))
        }
        Command::Keys { api, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(herald::accounts_cli::keys(&api, command))
        }
        Command::Domains { url, api_key, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(herald::domains_cli::run(&herald::domains_cli::Client::new(&url, &api_key), command))
        }
        Command::Replay { config, projection } => {
            let c = Config::load(config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(herald::replay::run(&c, projection))?;
            println!(
                "replayed {} records ({} applied) into the {projection:?} projection in {:.2} s: {:.0} records/s",
                report.records,
                report.applied,
                report.elapsed.as_secs_f64(),
                report.per_second()
            );
            Ok(())
        }
        Command::Config { command: ConfigCommand::Default } => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check { config } } => {
            let c = Config::load(Some(&config))?;
            herald::serve::install_crypto();
            herald::serve::signers(&c)?;
            let rules = herald::feedback::classifier(&c)?;
            // The master keyring, when one is given (a generated one is made at first start).
            let env = std::env::var(herald_engine::domains::vault::ENV).ok();
            if let (source, false) = c.keys.source(&c.storage.data_dir, env) {
                herald_engine::domains::vault::Vault::load(source)
                    .map_err(|e| anyhow::anyhow!("[keys] master keys: {e}"))?;
            }
            let nodes = match (c.backend.log, c.cluster.mode) {
                (herald::config::LogBackend::Embedded, _) => {
                    "single node (embedded log), owning every partition".to_owned()
                }
                (_, herald::config::ClusterMode::Group) => {
                    "nodes share partitions through Kafka consumer groups".to_owned()
                }
                (_, herald::config::ClusterMode::Static) => {
                    format!("static: node {} of {}", c.cluster.node_index, c.cluster.node_count)
                }
            };
            println!(
                "{}: ok ({} accounts, {} DKIM keys, {} bounce rules, log {:?}, store {:?}, {} partitions; {nodes})",
                config.display(),
                c.accounts.len(),
                c.dkim.len(),
                rules.len(),
                c.backend.log,
                c.backend.store,
                c.backend.partitions
            );
            Ok(())
        }
    }
}

fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    if config.accounts.is_empty() {
        tracing::warn!("no [[accounts]] configured: every API call will be refused with 401");
    }
    let render = herald::metrics::install()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            signal.cancel();
        });
        herald::serve::run(config, Some(render), shutdown, None).await
    })
}
