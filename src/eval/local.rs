//! The local GPU engine as an evaluation backend: a loaded [`Judge`] judges label-level
//! items (with P(unsafe) from its label scores) and serves as the critique
//! evaluator's chat model.

use std::ops::ControlFlow;

use super::{ChatBackend, JudgeBackend, JudgeOutcome};
use crate::error::Result;
use crate::judge::engine::{Judge, JudgeRequest};
use crate::judge::{Dialogue, JudgeProtocol, Lang, Mode, PromptPart};

impl JudgeBackend for Judge {
    fn judge(&self, dialogue: &Dialogue, lang: Lang, mode: Mode) -> Result<JudgeOutcome> {
        let request = JudgeRequest {
            dialogue: dialogue.clone(),
            lang: Some(lang),
            mode,
        };
        let verdict = self.evaluate(&request, |_| ControlFlow::Continue(()))?;
        Ok(JudgeOutcome {
            label: Some(verdict.label),
            p_unsafe: Some(verdict.p_unsafe),
            raw: verdict.output,
        })
    }

    fn protocol(&self) -> &dyn JudgeProtocol {
        Judge::protocol(self)
    }
}

impl ChatBackend for Judge {
    /// The reference's evaluator wrapping (`You are a helpful assistant.` then a
    /// ChatML user turn); the content is dialogue text, so it can never open a turn.
    fn complete(&self, content: &str, max_tokens: usize) -> Result<String> {
        let parts = [
            PromptPart::Template("You are a helpful assistant.\n<|im_start|>user\n".into()),
            PromptPart::Dialogue(content.to_string()),
            PromptPart::Template("<|im_end|>\n<|im_start|>assistant\n".into()),
        ];
        self.complete_prompt(&parts, max_tokens)
    }
}
