//! `textrec`: the user-facing binary. It depends on the recognizer's inference side only.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use textrec_recognizer::Vocabulary;

#[derive(Debug, Parser)]
#[command(
    name = "textrec",
    version,
    about = "Read handwriting: transcribe images with textrec models."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the label vocabulary textrec models predict (index, token); the CTC blank is 0.
    #[command(after_help = "Example:\n  textrec vocabulary --json | jq length")]
    Vocabulary {
        /// Print a JSON array of tokens instead (index = position).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Vocabulary { json } => {
            let vocab = Vocabulary::default();
            if json {
                println!("{}", serde_json::Value::from(vocab.tokens().to_vec()));
            } else {
                for (index, token) in vocab.tokens().iter().enumerate() {
                    println!("{index:>3} {token:?}");
                }
            }
        }
    }
    ExitCode::SUCCESS
}
