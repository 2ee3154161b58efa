//! `consentry`: one binary, one subcommand per file in `cmd/`. Each command
//! is thin glue over the library crates.

mod cmd;

use clap::Parser;

/// mimalloc: normalize allocates per record (~40 allocations now that short
/// strings live inline), and glibc's malloc made allocation a third of
/// normalize's time when there were more (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    // Panics report where, never what: a message may quote input.
    consentry_runtime::panics::install_hook();
    let cli = cmd::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
