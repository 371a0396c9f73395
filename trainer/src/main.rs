use anyhow::Result;
use clap::{Parser, Subcommand};
use trainer::cmd;

/// Fine-tune, evaluate and run Polyglot-ko (GPT-NeoX) models.
#[derive(Parser)]
#[command(name = "trainer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mean next-token loss and perplexity on a JSONL file.
    Eval(cmd::eval::EvalArgs),
    /// Stream a completion for a prompt.
    Generate(cmd::generate::GenerateArgs),
    /// Forward-pass timings (used by bench/forward_cpu.py).
    #[command(name = "bench-forward", hide = true)]
    BenchForward(cmd::bench::BenchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Eval(a) => cmd::eval::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::BenchForward(a) => cmd::bench::run(a),
    }
}
