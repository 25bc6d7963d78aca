//! Evaluation sets: label-level items (`query`, `response`, `label`) and critique-level
//! items (`prompt`, `response`, `aius`), from a JSON array or JSONL (one object per
//! line), and the `--limit` / `--sample` selection of a quick run.

use std::path::Path;

use crate::error::{Error, Result};
use crate::judge::{detect_language, Label, Lang};

/// One label-level item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelItem {
    /// The dataset's name (its file stem, e.g. `BeaverTails`).
    pub dataset: String,
    /// The item's position in its file (0-based), which identifies it across runs.
    pub index: usize,
    /// The template language, chosen once per file from all its text.
    pub lang: Lang,
    /// A's query.
    pub query: String,
    /// B's response, under judgement.
    pub response: String,
    /// The gold label.
    pub label: Label,
}

/// One critique-level item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CritiqueItem {
    /// The dataset's name (its file stem, e.g. `en`).
    pub dataset: String,
    /// The item's position in its file (0-based).
    pub index: usize,
    /// The template language, chosen once per file from all its text.
    pub lang: Lang,
    /// A's query.
    pub prompt: String,
    /// B's response.
    pub response: String,
    /// The reference atomic information units of a good critique.
    pub aius: Vec<String>,
}

/// A stable identity of an item across runs: `dataset#index`.
pub fn item_id(dataset: &str, index: usize) -> String {
    format!("{dataset}#{index}")
}

/// Reads a gold label: `Safe`/`Unsafe` in any case, or `安全`/`不安全`, surrounding
/// whitespace ignored.
pub fn parse_label(text: &str) -> Option<Label> {
    match text.trim().to_lowercase().as_str() {
        "safe" | "安全" => Some(Label::Safe),
        "unsafe" | "不安全" => Some(Label::Unsafe),
        _ => None,
    }
}

/// Where a record sits in its file, for error messages.
fn location(jsonl: bool, position: usize) -> String {
    if jsonl {
        format!("line {}", position + 1)
    } else {
        format!("item {position} (0-based)")
    }
}

/// The file's records with their positions: a JSON array when the text starts with
/// `[`, otherwise JSONL (blank lines skipped). The flag says whether it was JSONL.
fn records(file: &str, text: &str) -> Result<(Vec<(usize, serde_json::Value)>, bool)> {
    let bad = |message: String| Error::Dataset {
        file: file.to_string(),
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| bad(format!("not a valid JSON array: {e}")))?;
        return Ok((values.into_iter().enumerate().collect(), false));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line)
            .map_err(|e| bad(format!("line {}: not a JSON object: {e}", i + 1)))?;
        out.push((i, value));
    }
    Ok((out, true))
}

fn string_field(file: &str, value: &serde_json::Value, field: &str, at: &str) -> Result<String> {
    match value.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(Error::Dataset {
            file: file.to_string(),
            message: format!("{at}: \"{field}\" must be a string, got {other}"),
        }),
        None => Err(Error::Dataset {
            file: file.to_string(),
            message: format!("{at}: missing \"{field}\""),
        }),
    }
}

fn dataset_lang<'a>(texts: impl Iterator<Item = &'a str>) -> Lang {
    let joined: String = texts.collect::<Vec<_>>().join("\n");
    detect_language(&joined)
}

/// Parses label-level items from `text` (the contents of `file`, named in errors).
/// Items are numbered by their position: array index, or 0-based line number in JSONL.
pub fn parse_label_items(dataset: &str, file: &str, text: &str) -> Result<Vec<LabelItem>> {
    let (values, jsonl) = records(file, text)?;
    let mut items = Vec::with_capacity(values.len());
    for (position, value) in &values {
        let at = location(jsonl, *position);
        let query = string_field(file, value, "query", &at)?;
        let response = string_field(file, value, "response", &at)?;
        let label_text = string_field(file, value, "label", &at)?;
        let label = parse_label(&label_text).ok_or_else(|| Error::Dataset {
            file: file.to_string(),
            message: format!(
                "{at}: label \"{label_text}\" is not one of Safe, Unsafe, safe, unsafe, 安全, 不安全"
            ),
        })?;
        items.push(LabelItem {
            dataset: dataset.to_string(),
            index: *position,
            lang: Lang::En,
            query,
            response,
            label,
        });
    }
    let lang = dataset_lang(
        items
            .iter()
            .flat_map(|i| [i.query.as_str(), i.response.as_str()]),
    );
    for item in &mut items {
        item.lang = lang;
    }
    Ok(items)
}

/// Parses critique-level items (`prompt`, `response`, `aius`: an array of strings).
pub fn parse_critique_items(dataset: &str, file: &str, text: &str) -> Result<Vec<CritiqueItem>> {
    let (values, jsonl) = records(file, text)?;
    let mut items = Vec::with_capacity(values.len());
    for (position, value) in &values {
        let at = location(jsonl, *position);
        let prompt = string_field(file, value, "prompt", &at)?;
        let response = string_field(file, value, "response", &at)?;
        let aius = value
            .get("aius")
            .and_then(|a| a.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
            })
            .ok_or_else(|| Error::Dataset {
                file: file.to_string(),
                message: format!("{at}: \"aius\" must be an array of strings"),
            })?;
        items.push(CritiqueItem {
            dataset: dataset.to_string(),
            index: *position,
            lang: Lang::En,
            prompt,
            response,
            aius,
        });
    }
    let lang = dataset_lang(
        items
            .iter()
            .flat_map(|i| [i.prompt.as_str(), i.response.as_str()]),
    );
    for item in &mut items {
        item.lang = lang;
    }
    Ok(items)
}

fn read(path: &Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        file: path.display().to_string(),
        source,
    })?;
    let dataset = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok((dataset, text))
}

/// Loads a label-level file; the dataset is named after the file stem.
pub fn load_label_file(path: &Path) -> Result<Vec<LabelItem>> {
    let (dataset, text) = read(path)?;
    parse_label_items(&dataset, &path.display().to_string(), &text)
}

/// Loads a critique-level file; the dataset is named after the file stem.
pub fn load_critique_file(path: &Path) -> Result<Vec<CritiqueItem>> {
    let (dataset, text) = read(path)?;
    parse_critique_items(&dataset, &path.display().to_string(), &text)
}

/// Which items of a dataset a run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every item.
    #[default]
    All,
    /// The first `n` items in file order (`--limit N`).
    First(usize),
    /// `n` items drawn without replacement (`--sample N --seed S`), returned in file
    /// order: the first `n` positions of a Fisher–Yates shuffle of all positions
    /// (swapping position `i` with `i + r mod (len − i)`, `r` the next SplitMix64
    /// output of `seed`). The same seed and file give the same items on any machine.
    Sample { n: usize, seed: u64 },
}

/// The next output of the SplitMix64 generator with state `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The items `selection` takes from `items`, in file order. Applied per dataset, so a
/// sample of 200 takes 200 from each file.
pub fn select<T: Clone>(items: &[T], selection: Selection) -> Vec<T> {
    match selection {
        Selection::All => items.to_vec(),
        Selection::First(n) => items.iter().take(n).cloned().collect(),
        Selection::Sample { n, seed } => {
            let n = n.min(items.len());
            let mut positions: Vec<usize> = (0..items.len()).collect();
            let mut state = seed;
            for i in 0..n {
                let remaining = (items.len() - i) as u64;
                let j = i + (splitmix64(&mut state) % remaining) as usize;
                positions.swap(i, j);
            }
            let mut chosen = positions[..n].to_vec();
            chosen.sort_unstable();
            chosen.into_iter().map(|p| items[p].clone()).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_and_jsonl_with_english_and_chinese_labels() {
        let array = r#"[{"query":"q1","response":"r1","label":"Unsafe"},
                        {"query":"q2","response":"r2","label":"safe","class":"x"}]"#;
        let items = parse_label_items("set", "set.json", array).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0].label, items[1].label),
            (Label::Unsafe, Label::Safe)
        );
        assert_eq!(items[1].index, 1);
        assert_eq!(items[0].lang, Lang::En);

        let jsonl = "{\"query\":\"我需要找到一种方法\",\"response\":\"我不能帮助你\",\"label\":\"安全\"}\n\n\
                     {\"query\":\"怎么做\",\"response\":\"这样做\",\"label\":\"不安全\"}\n";
        let items = parse_label_items("zh", "zh.jsonl", jsonl).unwrap();
        assert_eq!(
            (items[0].label, items[1].label),
            (Label::Safe, Label::Unsafe)
        );
        assert_eq!((items[0].index, items[1].index), (0, 2));
        assert_eq!(items[0].lang, Lang::Zh);
    }

    #[test]
    fn errors_name_the_file_and_the_line_or_item() {
        let bad_label = r#"[{"query":"q","response":"r","label":"Safe"},{"query":"q","response":"r","label":"harmless"}]"#;
        let e = parse_label_items("d", "d.json", bad_label)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d.json") && e.contains("item 1") && e.contains("harmless"),
            "{e}"
        );

        let missing = "{\"query\":\"q\",\"response\":\"r\",\"label\":\"safe\"}\n{\"query\":\"q\",\"label\":\"safe\"}\n";
        let e = parse_label_items("d", "d.jsonl", missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.jsonl: line 2: missing \"response\""), "{e}");

        let broken = "{\"query\":\"q\",\"response\":\"r\",\"label\":\"safe\"}\n{\"query\": \n";
        let e = parse_label_items("d", "d.jsonl", broken)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");

        let wrong_type = r#"[{"query":"q","response":5,"label":"safe"}]"#;
        let e = parse_label_items("d", "d.json", wrong_type)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("item 0") && e.contains("must be a string"),
            "{e}"
        );

        let bad_aius = r#"[{"prompt":"p","response":"r","aius":"one"}]"#;
        let e = parse_critique_items("c", "c.json", bad_aius)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.json: item 0") && e.contains("aius"), "{e}");

        let e = load_label_file(Path::new("/nonexistent/x.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.json"), "{e}");
    }

    #[test]
    fn critique_items_parse() {
        let text = r#"[{"prompt":"p","response":"r","aius":["a","b"]}]"#;
        let items = parse_critique_items("en", "en.json", text).unwrap();
        assert_eq!(items[0].aius, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(item_id(&items[0].dataset, items[0].index), "en#0");
    }

    #[test]
    fn limit_and_seeded_sample_are_deterministic_and_in_file_order() {
        let items: Vec<usize> = (0..100).collect();
        assert_eq!(select(&items, Selection::First(3)), vec![0, 1, 2]);
        assert_eq!(select(&items, Selection::First(500)).len(), 100);
        let a = select(&items, Selection::Sample { n: 10, seed: 7 });
        let b = select(&items, Selection::Sample { n: 10, seed: 7 });
        let c = select(&items, Selection::Sample { n: 10, seed: 8 });
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, distinct: {a:?}");
        assert_ne!(a, (0..10).collect::<Vec<_>>());
        assert_eq!(
            select(&items, Selection::Sample { n: 1000, seed: 1 }),
            items
        );
    }

    #[test]
    fn the_shipped_label_sets_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/safety-j");
        for (file, count, lang) in [
            ("label_level/Flames.json", 300, Lang::Zh),
            ("label_level/DiaSafety.json", 1095, Lang::En),
        ] {
            let items = load_label_file(&dir.join(file)).unwrap();
            assert_eq!(items.len(), count, "{file}");
            assert_eq!(items[0].lang, lang, "{file}");
        }
        let items = load_critique_file(&dir.join("critique_level/zh.json")).unwrap();
        assert_eq!(items.len(), 300);
        assert_eq!(items[0].lang, Lang::Zh);
    }
}
