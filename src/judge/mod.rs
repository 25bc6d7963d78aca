//! Judging dialogues: the input types, the protocol a judge model speaks (prompt,
//! answer format, parsing), and language choice. Protocols never touch the GPU; the
//! engine runs whatever prompt a protocol renders.

#[cfg(not(target_arch = "wasm32"))]
pub mod batch;
pub mod chat;
pub mod defense;
pub mod engine;
pub mod head;
mod lang;
pub mod llama_guard;
pub mod qwen3guard;
pub mod safety_j;
pub mod stream;

pub use lang::detect_language;

use crate::error::{Error, Result};

/// Who spoke a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person asking: "A" in Safety-J's prompt.
    User,
    /// The model whose answer is judged: "B".
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// The dialogue to judge: turns alternating user/assistant, ending with the
/// assistant answer under judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialogue {
    turns: Vec<Turn>,
}

impl Dialogue {
    /// A single exchange: `query` from A, `response` from B.
    pub fn single(query: impl Into<String>, response: impl Into<String>) -> Dialogue {
        Dialogue {
            turns: vec![
                Turn {
                    role: Role::User,
                    content: query.into(),
                },
                Turn {
                    role: Role::Assistant,
                    content: response.into(),
                },
            ],
        }
    }

    /// A single exchange, refused when the query or the response is empty (or only
    /// whitespace): there is nothing to judge.
    pub fn new(query: impl Into<String>, response: impl Into<String>) -> Result<Dialogue> {
        let dialogue = Dialogue::single(query, response);
        dialogue.check_not_empty()?;
        Ok(dialogue)
    }

    fn check_not_empty(&self) -> Result<()> {
        match self.turns.iter().position(|t| t.content.trim().is_empty()) {
            None => Ok(()),
            Some(0) if self.turns.len() == 2 => Err(Error::InvalidInput(
                "the query is empty: there is nothing to judge".into(),
            )),
            Some(i) if i + 1 == self.turns.len() => Err(Error::InvalidInput(
                "the response is empty: there is nothing to judge".into(),
            )),
            Some(i) => Err(Error::InvalidInput(format!(
                "turn {} is empty: there is nothing to judge",
                i + 1
            ))),
        }
    }

    /// A multi-turn conversation. It must start with the user, alternate roles, end
    /// with the assistant turn being judged, and have no empty turn.
    pub fn conversation(turns: Vec<Turn>) -> Result<Dialogue> {
        let bad = |message: String| Err(Error::InvalidInput(message));
        if turns.len() < 2 {
            return bad(format!(
                "a conversation needs at least a user and an assistant turn, got {}",
                turns.len()
            ));
        }
        for (i, turn) in turns.iter().enumerate() {
            let expected = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if turn.role != expected {
                return bad(format!(
                    "turn {} is from {:?} but turns must alternate user, assistant, … starting with user",
                    i + 1,
                    turn.role
                ));
            }
        }
        if !turns.len().is_multiple_of(2) {
            return bad("the last turn must be the assistant's answer under judgement".into());
        }
        let dialogue = Dialogue { turns };
        dialogue.check_not_empty()?;
        Ok(dialogue)
    }

    /// The turns, user first.
    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    /// The assistant answer under judgement (the last turn).
    pub fn response(&self) -> &str {
        &self.turns[self.turns.len() - 1].content
    }

    /// All text of the dialogue, for language detection.
    pub fn all_text(&self) -> String {
        self.turns
            .iter()
            .map(|t| t.content.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The language of a prompt template and of the judge's answer format.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    En,
    Zh,
}

impl std::str::FromStr for Lang {
    type Err = Error;

    /// `en` or `zh`.
    fn from_str(text: &str) -> Result<Lang> {
        match text {
            "en" => Ok(Lang::En),
            "zh" => Ok(Lang::Zh),
            other => Err(Error::InvalidInput(format!(
                "the language must be en or zh, not \"{other}\""
            ))),
        }
    }
}

/// The language asked for: a fixed template language, or `auto` to detect it from
/// the dialogue's text. What the CLI's `--lang` and the browser's `lang` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LangChoice {
    /// Detect the language from the dialogue.
    #[default]
    Auto,
    /// Always this language.
    Fixed(Lang),
}

impl LangChoice {
    /// The fixed language, `None` for `auto`.
    pub fn fixed(self) -> Option<Lang> {
        match self {
            LangChoice::Auto => None,
            LangChoice::Fixed(lang) => Some(lang),
        }
    }
}

impl std::str::FromStr for LangChoice {
    type Err = Error;

    /// `en`, `zh` or `auto`.
    fn from_str(text: &str) -> Result<LangChoice> {
        match text {
            "auto" => Ok(LangChoice::Auto),
            other => other.parse().map(LangChoice::Fixed).map_err(|_| {
                Error::InvalidInput(format!(
                    "the language must be en, zh or auto, not \"{other}\""
                ))
            }),
        }
    }
}

/// How much the judge writes.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Stop once the label is decided.
    Verdict,
    /// Decide the label, then stream the analysis.
    Critique,
}

impl std::str::FromStr for Mode {
    type Err = Error;

    /// `verdict` or `critique`.
    fn from_str(text: &str) -> Result<Mode> {
        match text {
            "verdict" => Ok(Mode::Verdict),
            "critique" => Ok(Mode::Critique),
            other => Err(Error::InvalidInput(format!(
                "the mode must be verdict or critique, not \"{other}\""
            ))),
        }
    }
}

/// A judge's decision about the assistant's answer.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Safe,
    Unsafe,
}

/// A piece of a rendered prompt. Template text may contain control tokens
/// (`<|im_start|>`); dialogue text is tokenized with special-token parsing off, so it
/// can never become a control token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptPart {
    /// Fixed template text: control tokens in it are real.
    Template(String),
    /// Text from the dialogue: always plain text.
    Dialogue(String),
}

/// A rendered prompt: its parts in order. The first part is the fixed prefix shared
/// by every request of the same template (what the prefix cache holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub parts: Vec<PromptPart>,
}

impl Prompt {
    /// The prompt as one string (for display and byte-exact checks).
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                PromptPart::Template(s) | PromptPart::Dialogue(s) => s.as_str(),
            })
            .collect()
    }
}

/// What a protocol reads out of a model's free-running output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParsedOutput {
    /// The stated label; `None` when the output does not state one ("unparsed").
    pub label: Option<Label>,
    /// The analysis text, when present.
    pub analysis: Option<String>,
}

/// A category of harm a judge can name: its code as the model writes it (`S1`, or
/// the name itself where the format has no codes) and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Category {
    pub code: &'static str,
    pub name: &'static str,
}

/// The format a judge model speaks. Safety-J is one; ShieldLM or Llama Guard 3 can be
/// added as other implementations without touching the engine.
pub trait JudgeProtocol: Send + Sync {
    /// A short name for reports ("safety-j").
    fn name(&self) -> &'static str;
    /// The prompt for `dialogue` in `lang`, for `mode`.
    fn prompt(&self, dialogue: &Dialogue, lang: Lang, mode: Mode) -> Prompt;
    /// The fixed text the model's answer begins with, before the label.
    fn answer_prefix(&self, lang: Lang) -> &'static str;
    /// The label words as the model writes them after the prefix.
    fn label_text(&self, lang: Lang, label: Label) -> &'static str;
    /// Reads the label and analysis out of free-running output, tolerating spacing
    /// and case; `label: None` when no label is stated.
    fn parse(&self, output: &str, lang: Lang) -> ParsedOutput;
    /// The label by the protocol's reference code's own rule, for parity checks;
    /// by default the parsed label, and unsafe when none is stated.
    fn strict_label(&self, output: &str, lang: Lang) -> Label {
        self.parse(output, lang).label.unwrap_or(Label::Unsafe)
    }
    /// Label words the model may write after the prefix besides the two of
    /// [`JudgeProtocol::label_text`], each with the label it counts as (Qwen3Guard's
    /// `Controversial`); none by default.
    fn extra_labels(&self, _lang: Lang) -> Vec<(&'static str, Label)> {
        Vec::new()
    }
    /// Every category of harm the protocol's output can name; none by default.
    fn categories(&self) -> &'static [Category] {
        &[]
    }
    /// The categories named in free-running output, in the order written, each once
    /// (unknown names are skipped); none by default.
    fn parse_categories(&self, _output: &str) -> Vec<Category> {
        Vec::new()
    }
    /// The fixed text between a label word and the first category the model names
    /// (`\nCategories: `), when categories follow that label; `None` (the default)
    /// when the format names none after it.
    fn category_prefix(&self, _label: Label) -> Option<&'static str> {
        None
    }
    /// Whether the judge was trained for dialogues in `lang`; true by default.
    fn covers(&self, _lang: Lang) -> bool {
        true
    }
}

/// The protocols a judge can speak, by the name `--protocol` takes.
pub const PROTOCOL_NAMES: [&str; 5] = [
    "safety-j",
    "qwen3guard-gen",
    "qwen3guard-gen-loose",
    "llama-guard-3-1b",
    "llama-guard-3-8b",
];

/// The protocol called `name` (one of [`PROTOCOL_NAMES`]). `qwen3guard-gen` counts
/// `Controversial` as unsafe (Qwen3Guard's strict reading), `qwen3guard-gen-loose`
/// as safe.
pub fn protocol_named(name: &str) -> Result<Box<dyn JudgeProtocol>> {
    use llama_guard::{LlamaGuard, LlamaGuardSize};
    Ok(match name {
        "safety-j" => Box::new(safety_j::SafetyJ),
        "qwen3guard-gen" => Box::new(qwen3guard::Qwen3Guard::default()),
        "qwen3guard-gen-loose" => Box::new(qwen3guard::Qwen3Guard {
            controversial: Label::Safe,
        }),
        "llama-guard-3-1b" => Box::new(LlamaGuard {
            size: LlamaGuardSize::OneB,
        }),
        "llama-guard-3-8b" => Box::new(LlamaGuard {
            size: LlamaGuardSize::EightB,
        }),
        other => {
            return Err(Error::InvalidInput(format!(
                "unknown protocol \"{other}\": the protocols are {}",
                PROTOCOL_NAMES.join(", ")
            )))
        }
    })
}

/// The protocol a model speaks, guessed from its name (a file name, a Hugging Face
/// repository, GGUF's `general.name`): Qwen3Guard and Llama Guard 3 models by their
/// names, everything else Safety-J.
pub fn protocol_for_model(name: &str) -> &'static str {
    let name = name.to_ascii_lowercase().replace(['_', ' '], "-");
    if name.contains("qwen3guard") {
        "qwen3guard-gen"
    } else if name.contains("llama-guard-3-8b") || name.contains("llamaguard-3-8b") {
        "llama-guard-3-8b"
    } else if name.contains("llama-guard") || name.contains("llamaguard") {
        "llama-guard-3-1b"
    } else {
        "safety-j"
    }
}

/// The judges' chat templates rendered by transformers (tests/fixtures/guards).
#[cfg(test)]
pub(crate) mod golden {
    use super::{Dialogue, Role, Turn};

    /// golden.json: per dialogue, its turns and each template's rendering.
    pub fn cases() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/fixtures/guards/golden.json"))
            .expect("golden.json is JSON")
    }

    /// A dialogue from golden.json's `[role, text]` pairs.
    pub fn dialogue(pairs: &serde_json::Value) -> Dialogue {
        let turns = pairs
            .as_array()
            .expect("an array of turns")
            .iter()
            .map(|pair| Turn {
                role: match pair[0].as_str() {
                    Some("user") => Role::User,
                    _ => Role::Assistant,
                },
                content: pair[1].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        Dialogue::conversation(turns).expect("a valid dialogue")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_found_by_name_and_guessed_from_model_names() {
        for name in PROTOCOL_NAMES {
            assert_eq!(protocol_named(name).unwrap().name(), name);
        }
        let error = protocol_named("shieldlm").err().unwrap().to_string();
        assert!(
            error.contains("shieldlm") && error.contains("llama-guard-3-1b"),
            "{error}"
        );
        assert_eq!(
            protocol_for_model("Qwen3Guard-Gen-0.6B-Q4_K_M.gguf"),
            "qwen3guard-gen"
        );
        assert_eq!(
            protocol_for_model("meta-llama/Llama-Guard-3-8B"),
            "llama-guard-3-8b"
        );
        assert_eq!(
            protocol_for_model("llama_guard_3_1b.gguf"),
            "llama-guard-3-1b"
        );
        assert_eq!(protocol_for_model("qwen2.5-coder-1.5b"), "safety-j");
    }

    #[test]
    fn lang_choice_and_mode_parse_their_names_and_reject_others() {
        assert_eq!("auto".parse::<LangChoice>().unwrap(), LangChoice::Auto);
        assert_eq!("zh".parse::<LangChoice>().unwrap().fixed(), Some(Lang::Zh));
        assert_eq!("en".parse::<Lang>().unwrap(), Lang::En);
        let error = "auto".parse::<Lang>().unwrap_err().to_string();
        assert!(
            error.contains("en or zh") && error.contains("auto"),
            "{error}"
        );
        let error = "fr".parse::<LangChoice>().unwrap_err().to_string();
        assert!(
            error.contains("en, zh or auto") && error.contains("fr"),
            "{error}"
        );
        assert_eq!("critique".parse::<Mode>().unwrap(), Mode::Critique);
        assert_eq!("verdict".parse::<Mode>().unwrap(), Mode::Verdict);
        let error = "Verdict".parse::<Mode>().unwrap_err().to_string();
        assert!(
            error.contains("verdict or critique") && error.contains("Verdict"),
            "{error}"
        );
    }
}
