use std::process::ExitCode;

use clap::Parser as _;

/// Many small, short-lived allocations per request (rows, JSON, log lines): mimalloc's
/// thread-local free lists serve them without glibc's consolidation passes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One crypto provider for the whole process, before anything touches TLS.
    flowgate::http::tls::install_crypto_provider();
    flowgate::cli::run(flowgate::cli::Cli::parse())
}
