//! `facesearch`: the command line of the face search service — run the server, fetch
//! and verify models, measure accuracy and speed.

mod cli;
mod wiring;

use std::process::ExitCode;

use clap::FromArgMatches;

fn main() -> ExitCode {
    // Usage errors exit 1 (2 means "the server refused" for the client commands).
    // The matches too: `serve` shows where each setting came from (flag or environment).
    let parsed = cli::command().try_get_matches().and_then(|m| Ok((cli::Cli::from_arg_matches(&m)?, m)));
    let (args, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    cli::init_tracing(&args);
    match cli::run(args, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
