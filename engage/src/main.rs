//! `engage`: the all-in-one binary. `engage serve` runs every route on the internal port and the
//! public allowlist on the external port (and, with `--with-worker`, the dispatcher); the other
//! subcommands administer a deployment directly against PostgreSQL (migrations, tenants, API
//! keys, services, the demo tenant).
//!
//! Modules: [`cli`] (the command line and the admin subcommands), [`serving`] (`engage serve`:
//! listeners, in-process dispatcher, one cancellation token), [`demo`] (`engage demo`).

mod cli;
mod demo;
mod serving;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Servers log to stdout; admin subcommands keep stdout for their JSON output.
    let target = match cli.command {
        cli::Command::Serve { .. } => shared::telemetry::Target::Stdout,
        _ => shared::telemetry::Target::Stderr,
    };
    shared::process::main_with("engage", target, |cfg| cli::run(cli.command, cfg))
}
