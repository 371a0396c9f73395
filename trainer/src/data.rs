//! JSONL records for `trainer eval`: pre-tokenized ids, raw text, or Alpaca records. Errors name
//! the file and the line.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::sft_data::{parse_record as parse_alpaca, text_field};

#[derive(Debug, Clone, PartialEq)]
pub enum EvalRecord {
    Ids(Vec<u32>),
    Text(String),
    Alpaca {
        instruction: String,
        input: String,
        output: String,
    },
}

/// Parse one JSONL line.
pub fn parse_record(line: &str) -> Result<EvalRecord> {
    let value: Value = serde_json::from_str(line).context("invalid JSON")?;
    let Value::Object(obj) = value else {
        bail!("expected a JSON object");
    };
    if let Some(ids) = obj.get("input_ids") {
        let Value::Array(ids) = ids else {
            bail!("field `input_ids` must be an array of token ids");
        };
        let ids = ids
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .with_context(|| format!("field `input_ids`: {v} is not a token id"))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(EvalRecord::Ids(ids));
    }
    if obj.contains_key("text") {
        return Ok(EvalRecord::Text(text_field(&obj, "text", true)?));
    }
    if obj.contains_key("instruction") || obj.contains_key("output") {
        let r = parse_alpaca(Value::Object(obj))?;
        return Ok(EvalRecord::Alpaca {
            instruction: r.instruction,
            input: r.input,
            output: r.output,
        });
    }
    bail!("expected `input_ids`, `text`, or an Alpaca record with `instruction` and `output`")
}

/// Every non-blank line of a JSONL file, with its 1-based line number.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, EvalRecord)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec = parse_record(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.push((i + 1, rec));
    }
    if out.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_kinds() {
        assert_eq!(
            parse_record(r#"{"input_ids": [1, 2]}"#).unwrap(),
            EvalRecord::Ids(vec![1, 2])
        );
        assert_eq!(
            parse_record(r#"{"text": "가"}"#).unwrap(),
            EvalRecord::Text("가".into())
        );
        assert_eq!(
            parse_record(r#"{"instruction": "a", "output": "b"}"#).unwrap(),
            EvalRecord::Alpaca {
                instruction: "a".into(),
                input: String::new(),
                output: "b".into()
            }
        );
    }

    #[test]
    fn bad_records_say_why() {
        let e = |s| format!("{:#}", parse_record(s).unwrap_err());
        assert!(e(r#"{"instruction": "a", "output": 3}"#).contains("`output` must be a string"));
        assert!(e(r#"{"instruction": "a"}"#).contains("missing field `output`"));
        assert!(e(r#"{"input_ids": [1, -2]}"#).contains("not a token id"));
        assert!(e("{not json").contains("invalid JSON"));
        assert!(e("[1]").contains("JSON object"));
    }

    #[test]
    fn file_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("lp-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.jsonl");
        std::fs::write(&p, "{\"text\": \"a\"}\n\n{\"text\": 5}\n").unwrap();
        let msg = format!("{:#}", read_jsonl(&p).unwrap_err());
        assert!(msg.contains("bad.jsonl:3"), "{msg}");
    }
}
