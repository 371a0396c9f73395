//! The command line: subcommands and their dispatch (shared by the binary and the tests).

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd;

/// Fine-tune, evaluate and run Polyglot-ko (GPT-NeoX) models.
#[derive(Parser)]
#[command(name = "trainer", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Mean next-token loss and perplexity on a JSONL file.
    Eval(cmd::eval::EvalArgs),
    /// Exact match and character F1 of greedy answers to Alpaca questions.
    #[command(name = "eval-qa")]
    EvalQa(cmd::eval_qa::EvalQaArgs),
    /// Write a web model package (quantized shards, tokenizer, manifest) for the browser app.
    #[command(name = "export-web")]
    ExportWeb(cmd::export_web::ExportWebArgs),
    /// Stream a completion for a prompt.
    Generate(cmd::generate::GenerateArgs),
    /// LoRA fine-tuning on Alpaca instruction data (no arguments: the bundled default).
    Sft(Box<cmd::sft::SftArgs>),
    /// Causal-LM (pre)training on raw text, full or LoRA.
    Pretrain(Box<cmd::pretrain::PretrainArgs>),
    /// Train a byte-level BPE tokenizer.json shaped like Polyglot-ko's.
    Tokenizer(cmd::tokenizer::TokenizerArgs),
    /// Fold a LoRA adapter into its base model and write an HF model folder.
    Merge(cmd::merge::MergeArgs),
    /// Forward-pass timings (used by bench/forward_cpu.py).
    #[command(name = "bench-forward", hide = true)]
    BenchForward(cmd::bench::BenchArgs),
    /// Square matmul TFLOP/s, or every CubeCL matmul routine with --probe (bench/gpu_bench.sh).
    #[command(name = "bench-matmul", hide = true)]
    BenchMatmul(cmd::bench_matmul::BenchMatmulArgs),
    /// LoRA training-step timings (used by bench/train_step_cpu.py).
    #[command(name = "bench-train", hide = true)]
    BenchTrain(cmd::bench_train::BenchTrainArgs),
    /// The demo model's forward, stage by stage, on a device against the CPU.
    #[command(name = "check-device")]
    CheckDevice(cmd::check_device::CheckDeviceArgs),
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval(a) => cmd::eval::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::ExportWeb(a) => cmd::export_web::run(a),
        Command::EvalQa(a) => cmd::eval_qa::run(a),
        Command::Sft(a) => cmd::sft::run(*a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Pretrain(a) => cmd::pretrain::run(*a),
        Command::Tokenizer(a) => cmd::tokenizer::run(a),
        Command::BenchForward(a) => cmd::bench::run(a),
        Command::BenchMatmul(a) => cmd::bench_matmul::run(a),
        Command::BenchTrain(a) => cmd::bench_train::run(a),
        Command::CheckDevice(a) => cmd::check_device::run(a),
    }
}

/// Parse `args` (the first is the program name) and run them.
pub fn run_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    run(Cli::try_parse_from(args)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks over every subcommand and argument (run at parse time
    /// only in debug builds, and only for the subcommand parsed).
    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_matmul_parses_probe_shapes() {
        let cli = Cli::try_parse_from([
            "trainer",
            "bench-matmul",
            "--probe",
            "--shapes",
            "4096x2048x6144,8x16x32",
            "--dtypes",
            "bf16",
        ])
        .unwrap();
        let Command::BenchMatmul(a) = cli.command else {
            panic!("bench-matmul")
        };
        assert_eq!(a.shapes, vec![[4096, 2048, 6144], [8, 16, 32]]);
        assert_eq!(a.dtypes, vec![crate::device::DTypeArg::Bf16]);
        assert!(Cli::try_parse_from(["trainer", "bench-matmul", "--shapes", "4x4"]).is_err());
    }
}
