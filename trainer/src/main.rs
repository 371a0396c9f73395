use clap::Parser;

fn main() -> anyhow::Result<()> {
    trainer::cli::run(trainer::cli::Cli::parse())
}
