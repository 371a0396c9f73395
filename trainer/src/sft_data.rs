//! Alpaca instruction data for `trainer sft`: a JSON array or JSONL of
//! `{"instruction", "input" (optional), "output"}`. Errors name the file and line (the record
//! index for a JSON array); `skip_bad` turns them into a counted warning.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct AlpacaRecord {
    pub instruction: String,
    pub input: String,
    pub output: String,
}

/// A string field; absent or null is "" unless `required`.
pub fn text_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) if !required => Ok(String::new()),
        None => bail!("missing field `{key}`"),
        Some(other) => bail!("field `{key}` must be a string, found {other}"),
    }
}

pub fn parse_record(v: Value) -> Result<AlpacaRecord> {
    let Value::Object(obj) = v else {
        bail!("expected a JSON object");
    };
    Ok(AlpacaRecord {
        instruction: text_field(&obj, "instruction", true)?,
        input: text_field(&obj, "input", false)?,
        output: text_field(&obj, "output", true)?,
    })
}

/// Read one file. Returns the records and the number skipped (only with `skip_bad`).
pub fn read_file(path: &Path, skip_bad: bool) -> Result<(Vec<AlpacaRecord>, usize)> {
    let body =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut items: Vec<(String, Result<Value>)> = Vec::new();
    if body.trim_start().starts_with('[') {
        let arr: Vec<Value> = serde_json::from_str(&body)
            .with_context(|| format!("{}: invalid JSON array", path.display()))?;
        items.extend(
            arr.into_iter()
                .enumerate()
                .map(|(i, v)| (format!("record {}", i + 1), Ok(v))),
        );
    } else {
        for (i, line) in body.lines().enumerate() {
            if !line.trim().is_empty() {
                let v = serde_json::from_str(line).context("invalid JSON");
                items.push((format!("line {}", i + 1), v));
            }
        }
    }
    let (mut out, mut skipped) = (Vec::new(), 0);
    for (where_, v) in items {
        match v.and_then(parse_record) {
            Ok(r) => out.push(r),
            Err(e) if skip_bad => {
                eprintln!("warning: {}: {where_}: {e:#} (skipped)", path.display());
                skipped += 1;
            }
            Err(e) => bail!(
                "{}: {where_}: {e:#} (--skip-bad-records skips such records)",
                path.display()
            ),
        }
    }
    Ok((out, skipped))
}

/// Read every file; empty data is an error.
pub fn read_files(paths: &[impl AsRef<Path>], skip_bad: bool) -> Result<Vec<AlpacaRecord>> {
    let (mut all, mut skipped) = (Vec::new(), 0);
    for p in paths {
        let (r, s) = read_file(p.as_ref(), skip_bad)?;
        all.extend(r);
        skipped += s;
    }
    if skipped > 0 {
        eprintln!("warning: skipped {skipped} bad records");
    }
    if all.is_empty() {
        bail!(
            "no training records in {}",
            paths
                .iter()
                .map(|p| p.as_ref().display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lp-sft-data-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn jsonl_and_array() {
        let p = tmp(
            "a.jsonl",
            "{\"instruction\":\"a\",\"output\":\"b\"}\n\n{\"instruction\":\"c\",\"input\":\"d\",\"output\":\"e\"}\n",
        );
        assert_eq!(read_files(&[p], false).unwrap().len(), 2);
        let p = tmp(
            "a.json",
            "[{\"instruction\":\"a\",\"input\":null,\"output\":\"b\"}]",
        );
        assert_eq!(read_files(&[p], false).unwrap()[0].input, "");
    }

    #[test]
    fn bad_records_name_file_and_line() {
        let p = tmp(
            "bad.jsonl",
            "{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":1,\"output\":\"b\"}\n{oops\n",
        );
        let msg = format!(
            "{:#}",
            read_files(std::slice::from_ref(&p), false).unwrap_err()
        );
        assert!(
            msg.contains("bad.jsonl: line 2") && msg.contains("`instruction` must be a string"),
            "{msg}"
        );
        assert_eq!(read_files(&[p], true).unwrap().len(), 1);
        let p = tmp("empty.jsonl", "\n");
        assert!(
            format!("{:#}", read_files(&[p], false).unwrap_err()).contains("no training records")
        );
    }
}
