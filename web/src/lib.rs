//! The browser app (a later issue): a leptos page and a Web Worker running the `shared` model on
//! WebGPU. For now this crate only proves that the model crate builds for `wasm32-unknown-unknown`.

use shared::prompt::Template;

/// The prompt the app will send for a question, with the trainer's default template.
pub fn question_prompt(question: &str) -> String {
    Template::Seed.prompt(question, "")
}

#[cfg(test)]
mod tests {
    #[test]
    fn prompt_is_the_seed_template() {
        assert_eq!(
            super::question_prompt("질문"),
            "### Instruction:\n질문\n\n### Response:\n"
        );
    }
}
