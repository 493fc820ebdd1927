use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // One crypto provider for the whole process, before anything touches TLS.
    flowgate::http::tls::install_crypto_provider();
    flowgate::cli::run(flowgate::cli::Cli::parse())
}
