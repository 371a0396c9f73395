//! One file per subcommand, each with its clap `Args` and a `run`.

pub mod bench;
pub mod eval;
pub mod generate;
