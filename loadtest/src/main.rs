//! `herald-loadtest`: Herald's bundled load generator (`send`), smart SMTP sink (`sink`) and
//! scenario runner (`run`). The work lives in the `herald_loadtest` library; this file parses
//! the command line, runs one command and prints its report (a table, or JSON with `--json`).

use anyhow::Context;
use clap::Parser;
use herald_loadtest::cli::{Cli, Command, RunArgs, SendArgs, SinkArgs};
use herald_loadtest::progress::Progress;
use herald_loadtest::run::RunOptions;
use herald_loadtest::scenario::Scenario;
use herald_loadtest::sink::Sink;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herald_loadtest::install_crypto();
    let cli = Cli::parse();
    match cli.command {
        Command::Send(args) => send(args).await,
        Command::Sink(args) => sink(args).await,
        Command::Run(args) => run(args).await,
    }
}

fn print<T: serde::Serialize>(json: bool, value: &T, table: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{table}");
    }
    Ok(())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let progress = Progress::new(args.messages, args.quiet);
    let report = herald_loadtest::generator::run(config, &progress).await?;
    print(args.json, &report, report.table())
}

async fn sink(args: SinkArgs) -> anyhow::Result<()> {
    let sink = Sink::start(args.config()?).await?;
    if !args.quiet && !args.json {
        eprintln!("sink listening on {}", sink.local_addr());
    }
    let progress = Progress::new(args.messages, args.quiet);
    let ticker = progress.follow_sink(sink.stats().clone());
    tokio::select! {
        _ = sink.finished() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ticker.abort();
    progress.finish();
    let report = sink.stop().await;
    print(args.json, &report, report.table())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let options = RunOptions {
        herald: args.herald.clone(),
        api_key: args.api_key.clone(),
        sink_port: args.sink_port,
        allow_non_test_targets: args.allow_non_test_targets,
        quiet: args.quiet,
    };
    let report = herald_loadtest::run::run(&scenario, &options)
        .await
        .with_context(|| format!("running scenario {}", scenario.name))?;
    print(args.json, &report, report.table())?;
    if report.send.accepted == 0 {
        anyhow::bail!("Herald accepted none of the {} messages (see refused/errors above)", report.send.sent);
    }
    if !report.complete {
        anyhow::bail!(
            "the sink saw {} of {} expected recipients before the timeout",
            report.sink.rcpt_replies,
            report.expected_recipients
        );
    }
    Ok(())
}
