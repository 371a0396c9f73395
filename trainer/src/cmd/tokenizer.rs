//! `trainer tokenizer`: train a byte-level BPE `tokenizer.json` shaped like Polyglot-ko's
//! (Split on U+0CF1 then ByteLevel pre-tokenizer, ByteLevel decoder, no BOS, special tokens
//! `<|endoftext|>` = 0 and `<|pad|>` = 1).

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior, TokenizerBuilder,
};

use crate::cmd::pretrain::text_files;

#[derive(Debug, Args)]
pub struct TokenizerArgs {
    /// Text files or folders of .txt files.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    #[arg(long, default_value_t = 8000)]
    pub vocab_size: usize,
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Output folder; tokenizer.json is written there.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: TokenizerArgs) -> Result<()> {
    let files = text_files(&args.data)?;
    if args.vocab_size < 258 {
        bail!("--vocab-size must be at least 258 (256 bytes and 2 special tokens)");
    }
    let specials = vec![
        AddedToken::from("<|endoftext|>", true),
        AddedToken::from("<|pad|>", true),
    ];
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(args.vocab_size)
        .min_frequency(args.min_frequency)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build();
    let split = Split::new(
        SplitPattern::String("\u{0cf1}".into()),
        SplitDelimiterBehavior::Removed,
        false,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]);
    let mut tok = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)))
    .with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))))
    .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))))
    .build()
    .map_err(|e| anyhow!("{e}"))?;
    // Lines with their newline, CRLF read as LF (as Python's text mode reads them).
    let mut lines = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow!("reading {}: {e}", f.display()))?;
        lines.extend(
            text.replace("\r\n", "\n")
                .split_inclusive('\n')
                .map(str::to_string),
        );
    }
    tok.train(&mut trainer, lines.into_iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("tokenizer.json");
    tok.save(&path, false)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    let check = shared::Tokenizer::from_file(&path, None)?;
    println!(
        "tokenizer.json written to {} ({} tokens, <|endoftext|> = {}, <|pad|> = {})",
        args.out.display(),
        check.vocab_size(),
        check.eos_id(),
        check.pad_id()
    );
    Ok(())
}
