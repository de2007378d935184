//! The `stepkto` binary: parse the command line, build a validated config, dispatch.

use clap::Parser;
use stepkto::config::{Cli, Command};

#[global_allocator]
static GLOBAL: stepkto::model::cpu::alloc::SplitAlloc = stepkto::model::cpu::alloc::SplitAlloc;

fn main() -> std::process::ExitCode {
    stepkto::model::cpu::alloc::pin_thread_count();
    stepkto::model::cpu::alloc::retain_freed_blocks();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPKTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result: Result<(), Box<dyn std::error::Error>> = match &cli.command {
        Command::Serve(args) => match args.to_config() {
            Ok(cfg) => stepkto::api::run(cfg).map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Command::Check(args) => stepkto::cli::check(args).map_err(Into::into),
        Command::Judge(args) => stepkto::cli::judge::judge(args).map_err(Into::into),
        Command::Eval(cmd) => stepkto::cli::judge::eval(cmd).map_err(Into::into),
        Command::Generate(args) => stepkto::cli::train::generate(args).map_err(Into::into),
        Command::Logprobs(args) => stepkto::cli::train::logprobs(args).map_err(Into::into),
        Command::Train(cmd) => stepkto::cli::train::train(cmd).map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
