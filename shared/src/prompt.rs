//! Instruction prompt templates (Stanford Alpaca form and its Korean variants). The response is
//! appended directly after the prompt; the training target is `output` + `<|endoftext|>`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// `### Instruction:\n{instruction}\n\n[### Input:\n{input}\n\n]### Response:\n`
    #[default]
    Seed,
    /// Stanford Alpaca's PROMPT_DICT, with the English preamble and no newline after `### Response:`.
    Alpaca,
    /// KULLM's `templates/kullm.json`.
    Kullm,
    /// KoAlpaca's `### 질문: …\n\n[### 맥락: …\n\n]### 답변:`.
    Koalpaca,
}

impl std::str::FromStr for Template {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "seed" => Ok(Self::Seed),
            "alpaca" => Ok(Self::Alpaca),
            "kullm" => Ok(Self::Kullm),
            "koalpaca" => Ok(Self::Koalpaca),
            _ => Err(format!(
                "unknown template {s:?} (seed, alpaca, kullm, koalpaca)"
            )),
        }
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Seed => "seed",
            Self::Alpaca => "alpaca",
            Self::Kullm => "kullm",
            Self::Koalpaca => "koalpaca",
        })
    }
}

impl Template {
    /// The prompt for an instruction and an optional input (empty = none).
    pub fn prompt(self, instruction: &str, input: &str) -> String {
        let has_input = !input.is_empty();
        match (self, has_input) {
            (Self::Seed, true) => {
                format!("### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
            }
            (Self::Seed, false) => format!("### Instruction:\n{instruction}\n\n### Response:\n"),
            (Self::Alpaca, true) => format!(
                "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
            ),
            (Self::Alpaca, false) => format!(
                "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
            ),
            (Self::Kullm, true) => format!(
                "아래는 작업을 설명하는 명령어와 추가 컨텍스트를 제공하는 입력이 짝을 이루는 예제입니다. 요청을 적절히 완료하는 응답을 작성하세요.\n\n### 명령어:\n{instruction}\n\n### 입력:\n{input}\n\n### 응답:\n"
            ),
            (Self::Kullm, false) => format!(
                "아래는 작업을 설명하는 명령어입니다. 요청을 적절히 완료하는 응답을 작성하세요.\n\n### 명령어:\n{instruction}\n\n### 응답:\n"
            ),
            (Self::Koalpaca, true) => {
                format!("### 질문: {instruction}\n\n### 맥락: {input}\n\n### 답변:")
            }
            (Self::Koalpaca, false) => format!("### 질문: {instruction}\n\n### 답변:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_template_matches_the_recipe() {
        assert_eq!(
            Template::Seed.prompt("헌법 제1조는?", ""),
            "### Instruction:\n헌법 제1조는?\n\n### Response:\n"
        );
        assert_eq!(
            Template::Seed.prompt("요약하시오", "본문"),
            "### Instruction:\n요약하시오\n\n### Input:\n본문\n\n### Response:\n"
        );
        assert!(Template::Alpaca.prompt("a", "").ends_with("### Response:"));
    }
}
