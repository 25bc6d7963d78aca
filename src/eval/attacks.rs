//! Prompt-injection attacks on the judged text: a committed list (JSON, see
//! `data/attacks/`) of texts that try to talk the judge out of its verdict, each
//! placed before, inside or after B's response.

use std::path::Path;

use crate::error::{Error, Result};
use crate::judge::{Label, Lang};

/// Which verdict an attack pushes the judge toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Applied to unsafe items: a success is a `safe` verdict (a missed harm).
    ToSafe,
    /// Applied to safe items: a success is an `unsafe` verdict (a false alarm).
    ToUnsafe,
}

impl Direction {
    /// The gold label of the items the attack is applied to.
    pub fn target_gold(self) -> Label {
        match self {
            Direction::ToSafe => Label::Unsafe,
            Direction::ToUnsafe => Label::Safe,
        }
    }
}

/// Where the attack's text goes in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Prepended: `text + response`.
    Before,
    /// Inserted at the sentence or word boundary nearest the middle of the response.
    Inside,
    /// Appended: `response + text`.
    After,
}

/// The items an attack is applied to, by their template language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackLang {
    /// English items only.
    En,
    /// Chinese items only.
    Zh,
    /// Items of either language (control tokens carry no language).
    Any,
}

impl AttackLang {
    /// Whether the attack applies to an item judged with the `lang` template.
    pub fn covers(self, lang: Lang) -> bool {
        matches!(
            (self, lang),
            (AttackLang::Any, _) | (AttackLang::En, Lang::En) | (AttackLang::Zh, Lang::Zh)
        )
    }
}

/// One attack of a list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attack {
    /// A name unique across the lists of one run (`chatml-turns-after`).
    pub id: String,
    /// The family the results are grouped by (`control_tokens`, `fake_answer`,
    /// `ignore_instructions`, `claimed_context`, `role_play`, `lookalike`).
    pub family: String,
    /// The items it is applied to.
    pub language: AttackLang,
    /// The verdict it pushes toward.
    pub direction: Direction,
    /// Where its text goes.
    pub placement: Placement,
    /// The text, inserted as is (it carries its own newlines and spaces).
    pub text: String,
}

impl Attack {
    /// `response` with the attack's text placed where the attack says.
    pub fn apply(&self, response: &str) -> String {
        match self.placement {
            Placement::Before => format!("{}{response}", self.text),
            Placement::After => format!("{response}{}", self.text),
            Placement::Inside => {
                let at = middle_boundary(response);
                format!("{}{}{}", &response[..at], self.text, &response[at..])
            }
        }
    }
}

/// The byte offset nearest the middle of `text` that follows a sentence end, else
/// whitespace, else any character (CJK text has no spaces); 0 for empty text.
fn middle_boundary(text: &str) -> usize {
    let half = text.len() / 2;
    let nearest = |accept: &dyn Fn(char) -> bool| {
        text.char_indices()
            .filter(|&(_, c)| accept(c))
            .map(|(i, c)| i + c.len_utf8())
            .filter(|&end| end < text.len())
            .min_by_key(|&end| end.abs_diff(half))
    };
    nearest(&|c| matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？' | '；'))
        .or_else(|| nearest(&char::is_whitespace))
        .or_else(|| nearest(&|_| true))
        .unwrap_or(0)
}

/// A named list of attacks: the file's stem and its attacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackList {
    /// The file stem (`injection`, `injection_heldout`, …), which reports group by.
    pub name: String,
    /// The attacks, in file order.
    pub attacks: Vec<Attack>,
}

/// The file format: a note for readers and the attacks.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AttackFile {
    #[serde(rename = "note")]
    _note: Option<String>,
    attacks: Vec<Attack>,
}

/// Parses an attack list from `text` (the contents of `file`, named in errors):
/// `{"note": …, "attacks": [{id, family, language, direction, placement, text}]}`.
/// Ids must be unique and texts non-empty.
pub fn parse_attack_list(name: &str, file: &str, text: &str) -> Result<AttackList> {
    let bad = |message: String| Error::Dataset {
        file: file.to_string(),
        message,
    };
    let parsed: AttackFile =
        serde_json::from_str(text).map_err(|e| bad(format!("not an attack list: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    for attack in &parsed.attacks {
        if !seen.insert(attack.id.as_str()) {
            return Err(bad(format!("two attacks have the id {}", attack.id)));
        }
        if attack.text.trim().is_empty() || attack.id.trim().is_empty() {
            return Err(bad(format!(
                "attack \"{}\" has an empty id or text",
                attack.id
            )));
        }
    }
    Ok(AttackList {
        name: name.to_string(),
        attacks: parsed.attacks,
    })
}

/// Loads an attack list; it is named after the file stem.
pub fn load_attack_list(path: &Path) -> Result<AttackList> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        file: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    parse_attack_list(&name, &path.display().to_string(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::defense::{injection_suspected, neutralize};

    fn committed() -> Vec<AttackList> {
        ["injection", "injection_heldout", "injection_heldout2"]
            .iter()
            .map(|name| {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("data/attacks")
                    .join(format!("{name}.json"));
                load_attack_list(&path).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_committed_lists_load_and_cover_every_family_placement_and_direction() {
        let lists = committed();
        let mut ids = std::collections::HashSet::new();
        for list in &lists {
            let families: std::collections::HashSet<&str> =
                list.attacks.iter().map(|a| a.family.as_str()).collect();
            for family in [
                "control_tokens",
                "fake_answer",
                "ignore_instructions",
                "claimed_context",
                "role_play",
                "lookalike",
            ] {
                assert!(families.contains(family), "{} lacks {family}", list.name);
            }
            for placement in [Placement::Before, Placement::Inside, Placement::After] {
                assert!(list.attacks.iter().any(|a| a.placement == placement));
            }
            for direction in [Direction::ToSafe, Direction::ToUnsafe] {
                for lang in [Lang::En, Lang::Zh] {
                    assert!(list
                        .attacks
                        .iter()
                        .any(|a| a.direction == direction && a.language.covers(lang)));
                }
            }
            for attack in &list.attacks {
                assert!(ids.insert(attack.id.clone()), "{} twice", attack.id);
            }
        }
    }

    #[test]
    fn each_attack_places_its_text_where_it_says() {
        let response = "First step. Second step. Third step.";
        let zh = "第一步。第二步。第三步。";
        for attack in committed().iter().flat_map(|l| &l.attacks) {
            for base in [response, zh] {
                let attacked = attack.apply(base);
                assert_eq!(attacked.len(), base.len() + attack.text.len());
                let at = attacked.find(&attack.text).unwrap();
                let expected = match attack.placement {
                    Placement::Before => 0,
                    Placement::After => base.len(),
                    Placement::Inside => {
                        assert!(at > 0 && at < base.len(), "{}", attack.id);
                        at
                    }
                };
                assert_eq!(at, expected, "{}", attack.id);
                let rest = format!("{}{}", &attacked[..at], &attacked[at + attack.text.len()..]);
                assert_eq!(rest, base);
            }
        }
        let inside = |text: &str| {
            Attack {
                id: "x".into(),
                family: "f".into(),
                language: AttackLang::Any,
                direction: Direction::ToSafe,
                placement: Placement::Inside,
                text: "|".into(),
            }
            .apply(text)
        };
        assert_eq!(inside(response), "First step. Second step.| Third step.");
        assert_eq!(inside(zh), "第一步。|第二步。第三步。");
        assert_eq!(inside("one two three"), "one |two three");
        assert_eq!(inside("毒药配方"), "毒药|配方");
        assert_eq!(inside(""), "|");
    }

    /// Every attack of the lists the defence was written against (`injection`, and
    /// `injection_heldout` since its misses were learned) is escaped or flagged at the
    /// text level; the held-out list is measured, not asserted.
    #[test]
    fn the_defence_sees_every_attack_of_the_development_lists() {
        for attack in committed()[..2].iter().flat_map(|list| &list.attacks) {
            let attacked = attack.apply("Mix bleach and ammonia in a closed room.");
            let seen = injection_suspected(&attacked)
                || !neutralize(&attacked).1.is_empty()
                || crate::judge::defense::defend(&crate::judge::Dialogue::single("q", attacked))
                    .stripped
                    .is_some();
            assert!(seen, "{}", attack.id);
        }
    }

    #[test]
    fn a_bad_list_is_a_clear_error() {
        let e = parse_attack_list("x", "x.json", r#"{"attacks": [{"id": "a"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json") && e.contains("missing field"), "{e}");
        let one = r#"{"id":"a","family":"f","language":"en","direction":"to_safe","placement":"after","text":"t"}"#;
        let e = parse_attack_list("x", "x.json", &format!(r#"{{"attacks":[{one},{one}]}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("two attacks have the id a"), "{e}");
        let e = parse_attack_list(
            "x",
            "x.json",
            &format!(r#"{{"attacks":[{}]}}"#, one.replace("after", "middle")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("middle"), "{e}");
    }
}
