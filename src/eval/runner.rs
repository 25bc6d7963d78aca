//! Running an eval over items so that nothing is lost: each item's record is
//! appended to `results.jsonl` (one JSON object per line, flushed) as soon as it
//! completes, and a rerun with the same output folder skips the items already there.
//! A line cut short by a killed run (no final newline) is dropped and its item redone.
//!
//! Items run on a bounded pool of worker threads (`workers`); the calling thread
//! writes the records in completion order. By default the first failing item stops
//! the run: no new items start, items in flight finish and are saved, and the error
//! is returned; rerunning resumes after the saved items. With `keep_going`, a failed
//! item is logged to `errors.jsonl` and skipped (left undone, so a rerun retries it),
//! and the reports count it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::error::{Error, Result};
use crate::judge::{Dialogue, Mode};

use super::critique::CritiquePipeline;
use super::datasets::{item_id, CritiqueItem, LabelItem};
use super::records::{LabelRecord, ResultRecord};
use super::report::{self, CritiqueReport, LabelReport};
use super::JudgeBackend;

/// The results file in an eval's output folder.
pub const RESULTS_FILE: &str = "results.jsonl";
/// The log of failed items (with `keep_going`) in an eval's output folder.
pub const ERRORS_FILE: &str = "errors.jsonl";

/// How a run is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Items judged at once (at least 1). Above 1, worker threads share the backend.
    pub workers: usize,
    /// Log a failed item and go on, instead of stopping the run.
    pub keep_going: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            workers: 1,
            keep_going: false,
        }
    }
}

/// An item that failed in a `keep_going` run, as logged in `errors.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedItem {
    /// The item's id.
    pub id: String,
    /// The error, as its message reads.
    pub error: String,
}

impl ResultRecord for FailedItem {
    fn id(&self) -> &str {
        &self.id
    }
}

/// What a run produced: the records of the items asked for (in item order) and the
/// items that failed in this run.
#[derive(Debug)]
pub struct RunOutput<R> {
    /// Records of the items, old and new, in item order.
    pub records: Vec<R>,
    /// Items that failed in this run (only with `keep_going`).
    pub failed: Vec<FailedItem>,
}

/// Where each finished item goes: its record to the results, or, with `keep_going`,
/// its error to the error log.
struct Collector<R> {
    results: ResultsFile,
    errors: Option<ResultsFile>,
    records: Vec<R>,
    failed: Vec<FailedItem>,
}

impl<R: ResultRecord> Collector<R> {
    /// Saves one finished item; an `Err` means the run must stop.
    fn accept(&mut self, id: String, outcome: Result<R>) -> Result<()> {
        match (outcome, &mut self.errors) {
            (Ok(record), _) => {
                self.results.append(&record)?;
                self.records.push(record);
            }
            (Err(e), Some(errors)) => {
                let failed = FailedItem {
                    id,
                    error: e.to_string(),
                };
                errors.append(&failed)?;
                self.failed.push(failed);
            }
            (Err(e), None) => return Err(e),
        }
        Ok(())
    }
}

/// An append-only results file, opened for resuming.
pub struct ResultsFile {
    path: PathBuf,
    file: File,
}

impl ResultsFile {
    /// Opens (or creates) `path` and reads the records already in it. A final line
    /// without a newline is a record cut short by a killed run: it is cut off the
    /// file and not returned. Any other line that is not a record is an error.
    pub fn open<R: ResultRecord>(path: &Path) -> Result<(ResultsFile, Vec<R>)> {
        let name = path.display().to_string();
        let write_error = |source| Error::Write {
            file: name.clone(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::Io {
                    file: name.clone(),
                    source,
                })
            }
        };
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut records = Vec::new();
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record = serde_json::from_slice(line).map_err(|e| Error::Dataset {
                file: name.clone(),
                message: format!("line {} is not a result record of this eval: {e}", i + 1),
            })?;
            records.push(record);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(write_error)?;
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(write_error)?;
        }
        Ok((
            ResultsFile {
                path: path.to_path_buf(),
                file,
            },
            records,
        ))
    }

    /// Appends one record as a line and flushes it to the operating system.
    pub fn append<R: ResultRecord>(&mut self, record: &R) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|e| {
            Error::InvalidInput(format!("a result record cannot be written as JSON: {e}"))
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| Error::Write {
                file: self.path.display().to_string(),
                source,
            })
    }
}

/// Runs `evaluate` on every item whose id is not yet in `out_dir/results.jsonl`,
/// appending each record as it completes.
pub fn run_items<I, R, F>(
    items: &[I],
    id_of: impl Fn(&I) -> String,
    out_dir: &Path,
    options: RunOptions,
    evaluate: F,
) -> Result<RunOutput<R>>
where
    I: Sync,
    R: ResultRecord,
    F: Fn(&I) -> Result<R> + Sync,
{
    let mut seen = HashSet::new();
    for item in items {
        let id = id_of(item);
        if !seen.insert(id.clone()) {
            return Err(Error::InvalidInput(format!(
                "two items have the id {id}: give datasets distinct file names"
            )));
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Write {
        file: out_dir.display().to_string(),
        source,
    })?;
    let (results, records) = ResultsFile::open::<R>(&out_dir.join(RESULTS_FILE))?;
    let errors = match options.keep_going {
        true => Some(ResultsFile::open::<FailedItem>(&out_dir.join(ERRORS_FILE))?.0),
        false => None,
    };
    let done: HashSet<String> = records.iter().map(|r| r.id().to_string()).collect();
    let todo: Vec<&I> = items.iter().filter(|i| !done.contains(&id_of(i))).collect();
    let mut collector = Collector {
        results,
        errors,
        records,
        failed: Vec::new(),
    };

    let mut first_error = None;
    if options.workers <= 1 {
        for item in todo {
            collector.accept(id_of(item), evaluate(item))?;
        }
    } else {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<(usize, Result<R>)>();
        std::thread::scope(|scope| {
            for _ in 0..options.workers.min(todo.len()) {
                let tx = tx.clone();
                let (next, stop, todo, evaluate) = (&next, &stop, &todo, &evaluate);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = todo.get(i) else { break };
                        if tx.send((i, evaluate(item))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for (i, outcome) in rx {
                if let Err(e) = collector.accept(id_of(todo[i]), outcome) {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        });
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    let mut by_id: std::collections::HashMap<String, R> = collector
        .records
        .into_iter()
        .map(|r| (r.id().to_string(), r))
        .collect();
    Ok(RunOutput {
        records: items
            .iter()
            .filter_map(|i| by_id.remove(&id_of(i)))
            .collect(),
        failed: collector.failed,
    })
}

/// Judges one label-level item.
pub fn judge_label_item(judge: &dyn JudgeBackend, item: &LabelItem) -> Result<LabelRecord> {
    let dialogue = Dialogue::single(item.query.clone(), item.response.clone());
    let outcome = judge.judge(&dialogue, item.lang, Mode::Verdict)?;
    Ok(LabelRecord {
        id: item_id(&item.dataset, item.index),
        dataset: item.dataset.clone(),
        index: item.index,
        lang: item.lang,
        gold: item.label,
        predicted: outcome.label,
        p_unsafe: outcome.p_unsafe,
        reference_rule: judge.protocol().strict_label(&outcome.raw, item.lang),
        raw: outcome.raw,
    })
}

/// The label-level benchmark: judges `items` (resuming from `out_dir`), then writes
/// `report.json`, `report.md` and `report.html` there and returns the report.
pub fn run_label_eval(
    items: &[LabelItem],
    judge: &dyn JudgeBackend,
    out_dir: &Path,
    options: RunOptions,
) -> Result<LabelReport> {
    let output = run_items(
        items,
        |i| item_id(&i.dataset, i.index),
        out_dir,
        options,
        |item| judge_label_item(judge, item),
    )?;
    let report = report::label_report(&output.records, output.failed.len());
    report::write_label_report(out_dir, &report)?;
    Ok(report)
}

/// The critique meta-evaluation: runs `pipeline` on `items` (resuming from
/// `out_dir`), then writes the reports there and returns the report.
pub fn run_critique_eval(
    items: &[CritiqueItem],
    pipeline: &CritiquePipeline,
    out_dir: &Path,
    options: RunOptions,
) -> Result<CritiqueReport> {
    let output = run_items(
        items,
        |i| item_id(&i.dataset, i.index),
        out_dir,
        options,
        |item| pipeline.evaluate(item),
    )?;
    let report = report::critique_report(&output.records, output.failed.len());
    report::write_critique_report(out_dir, &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::critique::tests::{ScriptedCritiqueJudge, ScriptedEvaluator};
    use crate::eval::critique::CritiqueRecord;
    use crate::eval::JudgeOutcome;
    use crate::judge::safety_j::SafetyJ;
    use crate::judge::{JudgeProtocol, Label, Lang};
    use std::sync::Mutex;

    /// A test double of a judge LLM: answers "unsafe" when the response contains
    /// "bomb", "safe" otherwise, with a fixed P(unsafe) per answer; fails on the
    /// dialogue whose response is `fail_on` (standing in for a killed run).
    struct ScriptedLabelJudge {
        fail_on: Option<String>,
        calls: Mutex<Vec<String>>,
    }

    impl ScriptedLabelJudge {
        fn new(fail_on: Option<&str>) -> ScriptedLabelJudge {
            ScriptedLabelJudge {
                fail_on: fail_on.map(str::to_string),
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl JudgeBackend for ScriptedLabelJudge {
        fn judge(&self, dialogue: &Dialogue, _: Lang, mode: Mode) -> Result<JudgeOutcome> {
            assert_eq!(mode, Mode::Verdict);
            let response = dialogue.response().to_string();
            self.calls.lock().unwrap().push(response.clone());
            if self.fail_on.as_deref() == Some(response.as_str()) {
                return Err(Error::InvalidInput("scripted failure".into()));
            }
            let (raw, p) = if response.contains("bomb") {
                ("[Answer] unsafe\n[Analysis] harmful", 0.9)
            } else if response.contains("mumble") {
                ("I am not sure.", 0.5)
            } else {
                ("[Answer] safe\n[Analysis] fine", 0.2)
            };
            Ok(JudgeOutcome {
                label: SafetyJ.parse(raw, Lang::En).label,
                p_unsafe: Some(p),
                raw: raw.to_string(),
            })
        }

        fn protocol(&self) -> &dyn crate::judge::JudgeProtocol {
            &SafetyJ
        }
    }

    fn items() -> Vec<LabelItem> {
        let responses = [
            ("a", "Here is how to build a bomb.", Label::Unsafe),
            ("a", "I cannot help.", Label::Safe),
            ("a", "mumble", Label::Unsafe),
            ("b", "A bomb is easy to make.", Label::Unsafe),
            ("b", "Drink water.", Label::Safe),
            ("b", "That bomb joke is fine.", Label::Safe),
        ];
        responses
            .iter()
            .enumerate()
            .map(|(i, &(dataset, response, label))| LabelItem {
                dataset: dataset.into(),
                index: i,
                lang: Lang::En,
                query: "q".into(),
                response: response.into(),
                label,
            })
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("safetyj-eval-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn ids_in_results(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(RESULTS_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<LabelRecord>(l).unwrap().id)
            .collect()
    }

    #[test]
    fn a_run_cut_midway_resumes_without_losing_or_duplicating_items() {
        let dir = temp_dir("resume");
        let items = items();
        // First run dies at the fourth item; three records are saved.
        let failing = ScriptedLabelJudge::new(Some("A bomb is easy to make."));
        let e = run_label_eval(&items, &failing, &dir, RunOptions::default()).unwrap_err();
        assert!(e.to_string().contains("scripted failure"));
        assert_eq!(ids_in_results(&dir), vec!["a#0", "a#1", "a#2"]);
        // A kill while writing the next record leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(RESULTS_FILE))
            .unwrap();
        f.write_all(b"{\"id\":\"b#3\",\"dataset\":\"b\",\"ind")
            .unwrap();
        drop(f);

        let judge = ScriptedLabelJudge::new(None);
        let report = run_label_eval(
            &items,
            &judge,
            &dir,
            RunOptions {
                workers: 3,
                keep_going: false,
            },
        )
        .unwrap();
        let mut calls = judge.calls.lock().unwrap().clone();
        calls.sort();
        assert_eq!(
            calls,
            vec![
                "A bomb is easy to make.",
                "Drink water.",
                "That bomb joke is fine."
            ]
        );
        let mut ids = ids_in_results(&dir);
        ids.sort();
        assert_eq!(ids, vec!["a#0", "a#1", "a#2", "b#3", "b#4", "b#5"]);

        // Gold U S U U S S; predicted U S none(→U) U S U.
        assert_eq!(report.overall.items, 6);
        assert_eq!(report.overall.unparsed, 1);
        assert_eq!(report.overall.confusion.true_unsafe, 3);
        assert_eq!(report.overall.confusion.false_unsafe, 1);
        assert_eq!(report.overall.confusion.true_safe, 2);
        assert_eq!(report.datasets["a"].items, 3);
        assert_eq!(report.datasets["b"].confusion.false_unsafe, 1);
        // P(unsafe) of unsafe items 0.9, 0.5, 0.9 against safe items 0.2, 0.2, 0.9:
        // each 0.9 wins 1 + 1 + ½, the 0.5 wins 1 + 1 + 0, so 7 of 9 pairs.
        assert!((report.roc_auc.unwrap() - 7.0 / 9.0).abs() < 1e-12);

        // A third run has nothing left to do and reports the same.
        let idle = ScriptedLabelJudge::new(None);
        let again = run_label_eval(&items, &idle, &dir, RunOptions::default()).unwrap();
        assert!(idle.calls.lock().unwrap().is_empty());
        assert_eq!(again, report);
        assert_eq!(ids_in_results(&dir).len(), 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keep_going_logs_a_failed_item_and_a_rerun_retries_only_it() {
        let dir = temp_dir("keep-going");
        let items = items();
        let options = RunOptions {
            workers: 2,
            keep_going: true,
        };
        let failing = ScriptedLabelJudge::new(Some("Drink water."));
        let report = run_label_eval(&items, &failing, &dir, options).unwrap();
        assert_eq!((report.overall.items, report.failed_items), (5, 1));
        let errors = std::fs::read_to_string(dir.join(ERRORS_FILE)).unwrap();
        let failed: FailedItem = serde_json::from_str(errors.trim()).unwrap();
        assert_eq!(failed.id, "b#4");
        assert!(failed.error.contains("scripted failure"));
        assert!(std::fs::read_to_string(dir.join("report.md"))
            .unwrap()
            .contains("1 item failed"));

        let judge = ScriptedLabelJudge::new(None);
        let report = run_label_eval(&items, &judge, &dir, options).unwrap();
        assert_eq!(*judge.calls.lock().unwrap(), vec!["Drink water."]);
        assert_eq!((report.overall.items, report.failed_items), (6, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn duplicate_item_ids_are_refused() {
        let mut twice = items();
        twice.extend(items());
        let dir = temp_dir("duplicate");
        let e = run_label_eval(
            &twice,
            &ScriptedLabelJudge::new(None),
            &dir,
            RunOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a#0"), "{e}");
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error_naming_it() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(RESULTS_FILE), "not json\n").unwrap();
        let e = run_label_eval(
            &items(),
            &ScriptedLabelJudge::new(None),
            &dir,
            RunOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(RESULTS_FILE) && e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn label_reports_are_written_with_their_charts() {
        let dir = temp_dir("label-report");
        run_label_eval(
            &items(),
            &ScriptedLabelJudge::new(None),
            &dir,
            RunOptions::default(),
        )
        .unwrap();
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        for id in ["confusion-matrix", "roc-curve", "reliability-diagram"] {
            assert!(html.contains(&format!("<svg id=\"{id}\"")), "{id} missing");
        }
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("| overall | 6 | 83.3 |"), "{md}");
        assert!(md.contains("## Thresholds on P(unsafe)"), "{md}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["overall"]["items"], 6);
        assert_eq!(json["datasets"]["b"]["items"], 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn critique_eval_end_to_end_with_scripted_models_writes_records_and_reports() {
        let dir = temp_dir("critique");
        let items: Vec<CritiqueItem> = (0..3)
            .map(|i| CritiqueItem {
                dataset: "en".into(),
                index: i,
                lang: Lang::En,
                prompt: "How do I pick a lock?".into(),
                response: "Rake the pins.".into(),
                aius: vec![
                    "B explains lock picking.".into(),
                    "B praises the user.".into(),
                ],
            })
            .collect();
        let evaluator = ScriptedEvaluator::new();
        let pipeline = CritiquePipeline {
            judge: &ScriptedCritiqueJudge,
            evaluator: &evaluator,
            max_tokens: 64,
        };
        let report = run_critique_eval(
            &items,
            &pipeline,
            &dir,
            RunOptions {
                workers: 2,
                keep_going: false,
            },
        )
        .unwrap();
        let m = report.overall.metrics;
        assert_eq!(m.items, 3);
        assert!((m.micro.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.micro.recall - 0.5).abs() < 1e-12);
        assert_eq!(report.overall.checks, 3 * 5);
        assert_eq!(report.overall.answers_by_fallback, 3);
        let lines = std::fs::read_to_string(dir.join(RESULTS_FILE)).unwrap();
        let record: CritiqueRecord = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(record.critique_aius.len(), 3);
        assert!(record.extraction_output.starts_with("1. B explains"));
        assert!(record.recall_checks[0].raw.contains("<Answer Start>"));
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        assert!(html.contains("<svg id=\"critique-metrics\""));
        assert!(std::fs::read_to_string(dir.join("report.md"))
            .unwrap()
            .contains("| overall | 3 |"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
