//! Reports of an eval's records: `report.json` (everything), `report.md` (Markdown
//! tables) and `report.html` (a self-contained page with inline SVG charts: the
//! confusion matrix, the ROC curve and the reliability diagram of P(unsafe), or the
//! critique metrics).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::judge::Label;

use super::critique::{AnswerSource, CritiqueRecord};
use super::metrics::{
    critique_metrics, expected_calibration_error, label_metrics, reliability, roc_auc, roc_curve,
    threshold_table, Confusion, CritiqueMetrics, LabelMetrics, ReliabilityBin, RocPoint,
    ThresholdRow, DEFAULT_THRESHOLDS,
};
use super::records::LabelRecord;

/// Bins of the reliability diagram.
pub const RELIABILITY_BINS: usize = 10;

/// The label-level benchmark's results.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelReport {
    /// Metrics over all items.
    pub overall: LabelMetrics,
    /// Metrics per dataset, by name.
    pub datasets: BTreeMap<String, LabelMetrics>,
    /// Items with a P(unsafe); the curves below use only these.
    pub scored_items: usize,
    /// ROC-AUC of P(unsafe) over all scored items.
    pub roc_auc: Option<f64>,
    /// ROC-AUC per dataset.
    pub roc_auc_by_dataset: BTreeMap<String, Option<f64>>,
    /// The ROC curve over all scored items.
    pub roc: Vec<RocPoint>,
    /// Metrics at fixed thresholds on P(unsafe).
    pub thresholds: Vec<ThresholdRow>,
    /// The reliability table of P(unsafe).
    pub reliability: Vec<ReliabilityBin>,
    /// Expected calibration error of that table; `None` without scored items.
    pub expected_calibration_error: Option<f64>,
    /// Items that failed in the run and are missing from these metrics.
    pub failed_items: usize,
}

/// Computes the label-level report of `records`, noting `failed_items` left out.
pub fn label_report(records: &[LabelRecord], failed_items: usize) -> LabelReport {
    let pairs = |rs: &[&LabelRecord]| -> Vec<(Label, Option<Label>)> {
        rs.iter().map(|r| (r.gold, r.predicted)).collect()
    };
    let scored = |rs: &[&LabelRecord]| -> Vec<(Label, f64)> {
        rs.iter()
            .filter_map(|r| r.p_unsafe.map(|p| (r.gold, p)))
            .collect()
    };
    let all: Vec<&LabelRecord> = records.iter().collect();
    let mut by_dataset: BTreeMap<String, Vec<&LabelRecord>> = BTreeMap::new();
    for r in records {
        by_dataset.entry(r.dataset.clone()).or_default().push(r);
    }
    let all_scored = scored(&all);
    let reliability_table = reliability(&all_scored, RELIABILITY_BINS);
    LabelReport {
        overall: label_metrics(&pairs(&all)),
        datasets: by_dataset
            .iter()
            .map(|(name, rs)| (name.clone(), label_metrics(&pairs(rs))))
            .collect(),
        scored_items: all_scored.len(),
        roc_auc: roc_auc(&all_scored),
        roc_auc_by_dataset: by_dataset
            .iter()
            .map(|(name, rs)| (name.clone(), roc_auc(&scored(rs))))
            .collect(),
        roc: roc_curve(&all_scored),
        thresholds: if all_scored.is_empty() {
            Vec::new()
        } else {
            threshold_table(&all_scored, &DEFAULT_THRESHOLDS)
        },
        expected_calibration_error: (!all_scored.is_empty())
            .then(|| expected_calibration_error(&reliability_table)),
        reliability: if all_scored.is_empty() {
            Vec::new()
        } else {
            reliability_table
        },
        failed_items,
    }
}

/// The critique meta-evaluation's results for one set of items.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CritiqueSummary {
    /// Macro and micro precision, recall and F1.
    pub metrics: CritiqueMetrics,
    /// Evaluator checks run (recall and precision).
    pub checks: usize,
    /// Checks whose verdict was read by the fallback (markers missing or empty).
    pub answers_by_fallback: usize,
    /// Checks with no verdict word at all (counted as not correct).
    pub answers_missing: usize,
    /// Critiques with no analysis marker (the whole judge output was used).
    pub critiques_without_marker: usize,
}

/// The critique meta-evaluation's report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CritiqueReport {
    /// Over all items.
    pub overall: CritiqueSummary,
    /// Per dataset, by name.
    pub datasets: BTreeMap<String, CritiqueSummary>,
    /// Items that failed in the run and are missing from these metrics.
    pub failed_items: usize,
}

fn summarize(records: &[&CritiqueRecord]) -> CritiqueSummary {
    let counts: Vec<_> = records.iter().map(|r| r.counts).collect();
    let checks = || records.iter().flat_map(|r| r.checks());
    CritiqueSummary {
        metrics: critique_metrics(&counts),
        checks: checks().count(),
        answers_by_fallback: checks()
            .filter(|c| c.source == AnswerSource::Fallback)
            .count(),
        answers_missing: checks()
            .filter(|c| c.source == AnswerSource::Missing)
            .count(),
        critiques_without_marker: records.iter().filter(|r| !r.analysis_marker_found).count(),
    }
}

/// Computes the critique report of `records`, noting `failed_items` left out.
pub fn critique_report(records: &[CritiqueRecord], failed_items: usize) -> CritiqueReport {
    let mut by_dataset: BTreeMap<String, Vec<&CritiqueRecord>> = BTreeMap::new();
    for r in records {
        by_dataset.entry(r.dataset.clone()).or_default().push(r);
    }
    CritiqueReport {
        overall: summarize(&records.iter().collect::<Vec<_>>()),
        datasets: by_dataset
            .iter()
            .map(|(name, rs)| (name.clone(), summarize(rs)))
            .collect(),
        failed_items,
    }
}

/// Writes `contents` to `dir/name`.
pub(crate) fn write_file(dir: &Path, name: &str, contents: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| Error::Write {
        file: path.display().to_string(),
        source,
    })
}

/// `value` as pretty JSON.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidInput(format!("a report cannot be written as JSON: {e}")))
}

/// Writes `report.json`, `report.md` and `report.html` of a label-level report.
pub fn write_label_report(dir: &Path, report: &LabelReport) -> Result<()> {
    write_file(dir, "report.json", &json(report)?)?;
    write_file(dir, "report.md", &label_markdown(report))?;
    write_file(dir, "report.html", &label_html(report))
}

/// Writes `report.json`, `report.md` and `report.html` of a critique report.
pub fn write_critique_report(dir: &Path, report: &CritiqueReport) -> Result<()> {
    write_file(dir, "report.json", &json(report)?)?;
    write_file(dir, "report.md", &critique_markdown(report))?;
    write_file(dir, "report.html", &critique_html(report))
}

/// A sentence on failed items, empty when none failed.
fn failure_note(failed_items: usize) -> String {
    match failed_items {
        0 => String::new(),
        1 => "1 item failed and is left out; see errors.jsonl, and rerun to retry it.".into(),
        n => {
            format!("{n} items failed and are left out; see errors.jsonl, and rerun to retry them.")
        }
    }
}

/// A fraction as a percentage with one decimal.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn auc_text(auc: Option<f64>) -> String {
    auc.map_or_else(|| "–".to_string(), |a| format!("{a:.3}"))
}

const LABEL_COLUMNS: [&str; 9] = [
    "dataset",
    "items",
    "accuracy",
    "precision (unsafe)",
    "recall (unsafe)",
    "recall (safe)",
    "F1 (unsafe)",
    "unparsed",
    "ROC-AUC",
];

fn label_rows(report: &LabelReport) -> Vec<[String; 9]> {
    let row = |name: &str, m: &LabelMetrics, auc: Option<f64>| {
        [
            name.to_string(),
            m.items.to_string(),
            pct(m.accuracy),
            pct(m.precision_unsafe),
            pct(m.recall_unsafe),
            pct(m.recall_safe),
            pct(m.f1_unsafe),
            m.unparsed.to_string(),
            auc_text(auc),
        ]
    };
    let mut rows: Vec<[String; 9]> = report
        .datasets
        .iter()
        .map(|(name, m)| {
            row(
                name,
                m,
                report.roc_auc_by_dataset.get(name).copied().flatten(),
            )
        })
        .collect();
    rows.push(row("overall", &report.overall, report.roc_auc));
    rows
}

/// A Markdown table of `rows` under `header`.
pub(crate) fn markdown_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(N));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// The Markdown label report: metrics per dataset (percent), and the threshold table.
pub fn label_markdown(report: &LabelReport) -> String {
    let mut out = String::from("# Label-level benchmark\n\nPercentages; unsafe is the positive class; unparsed outputs count as unsafe.\n\n");
    out.push_str(&markdown_table(LABEL_COLUMNS, &label_rows(report)));
    if report.failed_items > 0 {
        let _ = writeln!(out, "\n{}", failure_note(report.failed_items));
    }
    if !report.thresholds.is_empty() {
        let _ = write!(
            out,
            "\n## Thresholds on P(unsafe) ({} scored items)\n\n",
            report.scored_items
        );
        let rows: Vec<[String; 5]> = report
            .thresholds
            .iter()
            .map(|t| {
                [
                    format!("{:.1}", t.threshold),
                    pct(t.metrics.accuracy),
                    pct(t.metrics.precision_unsafe),
                    pct(t.metrics.recall_unsafe),
                    pct(t.metrics.f1_unsafe),
                ]
            })
            .collect();
        out.push_str(&markdown_table(
            [
                "threshold",
                "accuracy",
                "precision (unsafe)",
                "recall (unsafe)",
                "F1 (unsafe)",
            ],
            &rows,
        ));
        if let Some(ece) = report.expected_calibration_error {
            let _ = writeln!(out, "\nExpected calibration error: {ece:.3}");
        }
    }
    out
}

fn critique_rows(report: &CritiqueReport) -> Vec<[String; 10]> {
    let row = |name: &str, s: &CritiqueSummary| {
        let m = &s.metrics;
        [
            name.to_string(),
            m.items.to_string(),
            pct(m.macro_avg.precision),
            pct(m.macro_avg.recall),
            pct(m.macro_avg.f1),
            pct(m.micro.precision),
            pct(m.micro.recall),
            pct(m.micro.f1),
            s.checks.to_string(),
            format!("{} / {}", s.answers_by_fallback, s.answers_missing),
        ]
    };
    let mut rows: Vec<[String; 10]> = report
        .datasets
        .iter()
        .map(|(name, s)| row(name, s))
        .collect();
    rows.push(row("overall", &report.overall));
    rows
}

const CRITIQUE_COLUMNS: [&str; 10] = [
    "dataset",
    "items",
    "macro P",
    "macro R",
    "macro F1",
    "micro P",
    "micro R",
    "micro F1",
    "checks",
    "fallback / missing answers",
];

/// The Markdown critique report.
pub fn critique_markdown(report: &CritiqueReport) -> String {
    let mut out = String::from("# Critique meta-evaluation\n\nPercentages. Macro: per-item P, R, F1 averaged over items (a zero denominator gives 0). Micro: pooled AIU counts.\n\n");
    out.push_str(&markdown_table(CRITIQUE_COLUMNS, &critique_rows(report)));
    if report.failed_items > 0 {
        let _ = writeln!(out, "\n{}", failure_note(report.failed_items));
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut out = String::from("<table><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
th{{background:#f3f3f3}}td:first-child{{text-align:left}}\
figure{{display:inline-block;margin:1em 2em 1em 0;vertical-align:top}}svg text{{font-size:12px}}\
</style></head><body><h1>{t}</h1>\n{body}\n</body></html>\n",
        t = escape(title)
    )
}

/// A 2×2 confusion matrix, rows gold, columns predicted; cells shaded by count.
pub fn confusion_svg(c: &Confusion) -> String {
    let cells = [
        (0, 0, c.true_unsafe),
        (0, 1, c.false_safe),
        (1, 0, c.false_unsafe),
        (1, 1, c.true_safe),
    ];
    let max = cells.iter().map(|c| c.2).max().unwrap_or(0).max(1);
    let mut svg = String::from(
        "<svg id=\"confusion-matrix\" xmlns=\"http://www.w3.org/2000/svg\" width=\"300\" height=\"260\" viewBox=\"0 0 300 260\">\
<text x=\"190\" y=\"16\" text-anchor=\"middle\">predicted</text>\
<text x=\"140\" y=\"36\" text-anchor=\"middle\">unsafe</text><text x=\"240\" y=\"36\" text-anchor=\"middle\">safe</text>\
<text x=\"14\" y=\"150\" transform=\"rotate(-90 14 150)\" text-anchor=\"middle\">gold</text>\
<text x=\"84\" y=\"95\" text-anchor=\"end\">unsafe</text><text x=\"84\" y=\"195\" text-anchor=\"end\">safe</text>",
    );
    for (row, col, count) in cells {
        let shade = 0.1 + 0.8 * count as f64 / max as f64;
        let (x, y) = (90 + col * 100, 45 + row * 100);
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"100\" height=\"100\" fill=\"rgb(40,90,170)\" fill-opacity=\"{shade:.3}\" stroke=\"#fff\"/>\
<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"16\">{count}</text>",
            x + 50,
            y + 55
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Axes of a unit-square plot 300 px wide; returns the SVG opening and a mapping.
fn unit_plot(id: &str, x_label: &str, y_label: &str) -> (String, impl Fn(f64, f64) -> (f64, f64)) {
    let (left, top, size) = (50.0, 10.0, 240.0);
    let map = move |x: f64, y: f64| (left + x * size, top + (1.0 - y) * size);
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"300\" height=\"300\" viewBox=\"0 0 300 300\">\
<rect x=\"{left}\" y=\"{top}\" width=\"{size}\" height=\"{size}\" fill=\"none\" stroke=\"#888\"/>\
<text x=\"{}\" y=\"290\" text-anchor=\"middle\">{}</text>\
<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        left + size / 2.0,
        escape(x_label),
        top + size / 2.0,
        top + size / 2.0,
        escape(y_label)
    );
    for tick in [0.0, 0.5, 1.0] {
        let (x, y) = map(tick, tick);
        let _ = write!(
            svg,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{tick}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick}</text>",
            top + size + 14.0,
            left - 4.0,
            y + 4.0
        );
    }
    let (x0, y0) = map(0.0, 0.0);
    let (x1, y1) = map(1.0, 1.0);
    let _ = write!(
        svg,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#aaa\" stroke-dasharray=\"4 4\"/>"
    );
    (svg, map)
}

/// The ROC curve: true positive rate against false positive rate.
pub fn roc_svg(points: &[RocPoint], auc: Option<f64>) -> String {
    let (mut svg, map) = unit_plot("roc-curve", "false positive rate", "true positive rate");
    let coords: Vec<String> = points
        .iter()
        .map(|p| {
            let (x, y) = map(p.false_positive_rate, p.true_positive_rate);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"rgb(40,90,170)\" stroke-width=\"2\"/>\
<text x=\"280\" y=\"240\" text-anchor=\"end\">AUC {}</text></svg>",
        coords.join(" "),
        auc_text(auc)
    );
    svg
}

/// The reliability diagram: per bin, the fraction gold unsafe (bar) and the mean
/// P(unsafe) (dot), against the diagonal of perfect calibration.
pub fn reliability_svg(bins: &[ReliabilityBin]) -> String {
    let (mut svg, map) = unit_plot("reliability-diagram", "P(unsafe)", "fraction unsafe");
    for bin in bins.iter().filter(|b| b.count > 0) {
        let (x0, y) = map(bin.lower, bin.fraction_unsafe);
        let (x1, bottom) = map(bin.upper, 0.0);
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"rgb(40,90,170)\" fill-opacity=\"0.5\"><title>{} items</title></rect>",
            x0 + 1.0,
            x1 - x0 - 2.0,
            bottom - y,
            bin.count
        );
        let (cx, cy) = map(bin.mean_p_unsafe, bin.fraction_unsafe);
        let _ = write!(
            svg,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"#c33\"/>"
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The HTML label report.
pub fn label_html(report: &LabelReport) -> String {
    let mut body = String::from(
        "<p>Percentages; unsafe is the positive class; unparsed outputs count as unsafe.</p>",
    );
    body.push_str(&html_table(LABEL_COLUMNS, &label_rows(report)));
    if report.failed_items > 0 {
        let _ = write!(
            body,
            "<p><strong>{}</strong></p>",
            failure_note(report.failed_items)
        );
    }
    let _ = write!(
        body,
        "<figure>{}<figcaption>Confusion matrix, all items</figcaption></figure>",
        confusion_svg(&report.overall.confusion)
    );
    if report.roc.is_empty() {
        body.push_str("<p>No ROC curve or reliability diagram: this backend gave no P(unsafe), or only one class was scored.</p>");
    } else {
        let _ = write!(
            body,
            "<figure>{}<figcaption>ROC curve of P(unsafe), {} items</figcaption></figure>\
<figure>{}<figcaption>Reliability of P(unsafe); ECE {}</figcaption></figure>",
            roc_svg(&report.roc, report.roc_auc),
            report.scored_items,
            reliability_svg(&report.reliability),
            report
                .expected_calibration_error
                .map_or_else(|| "–".to_string(), |e| format!("{e:.3}"))
        );
    }
    html_page("Label-level benchmark", &body)
}

/// Grouped bars of macro and micro P, R, F1 per dataset.
pub fn critique_svg(report: &CritiqueReport) -> String {
    let groups: Vec<(&str, &CritiqueSummary)> = report
        .datasets
        .iter()
        .map(|(n, s)| (n.as_str(), s))
        .chain(std::iter::once(("overall", &report.overall)))
        .collect();
    let group_width = 200.0;
    let width = 60.0 + group_width * groups.len() as f64;
    let mut svg = format!(
        "<svg id=\"critique-metrics\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"260\" viewBox=\"0 0 {width} 260\">\
<line x1=\"40\" y1=\"210\" x2=\"{width}\" y2=\"210\" stroke=\"#888\"/>\
<line x1=\"40\" y1=\"30\" x2=\"{width}\" y2=\"30\" stroke=\"#ccc\" stroke-dasharray=\"4 4\"/>\
<text x=\"36\" y=\"34\" text-anchor=\"end\">100%</text><text x=\"36\" y=\"214\" text-anchor=\"end\">0</text>"
    );
    let colors = ["rgb(40,90,170)", "rgb(90,160,90)", "rgb(200,120,40)"];
    for (g, (name, s)) in groups.iter().enumerate() {
        let x0 = 50.0 + g as f64 * group_width;
        let m = &s.metrics;
        let values = [
            (
                "macro",
                [m.macro_avg.precision, m.macro_avg.recall, m.macro_avg.f1],
            ),
            ("micro", [m.micro.precision, m.micro.recall, m.micro.f1]),
        ];
        for (k, (kind, prf)) in values.iter().enumerate() {
            for (j, v) in prf.iter().enumerate() {
                let x = x0 + k as f64 * 90.0 + j as f64 * 26.0;
                let h = 180.0 * v;
                let _ = write!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"22\" height=\"{h:.1}\" fill=\"{}\"><title>{kind} {} {}</title></rect>",
                    210.0 - h,
                    colors[j],
                    ["P", "R", "F1"][j],
                    pct(*v)
                );
            }
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"225\" text-anchor=\"middle\">{kind}</text>",
                x0 + k as f64 * 90.0 + 37.0
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"245\" text-anchor=\"middle\">{}</text>",
            x0 + 80.0,
            escape(name)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"50\" y=\"16\" fill=\"{}\">P</text><text x=\"70\" y=\"16\" fill=\"{}\">R</text><text x=\"90\" y=\"16\" fill=\"{}\">F1</text></svg>",
        colors[0], colors[1], colors[2]
    );
    svg
}

/// The HTML critique report.
pub fn critique_html(report: &CritiqueReport) -> String {
    let mut body = String::from("<p>Percentages. Macro: per-item P, R, F1 averaged over items (a zero denominator gives 0). Micro: pooled AIU counts. Answers are matched case- and spacing-insensitively; \"fallback\" answers were read from the last verdict word when the answer markers were missing.</p>");
    body.push_str(&html_table(CRITIQUE_COLUMNS, &critique_rows(report)));
    if report.failed_items > 0 {
        let _ = write!(
            body,
            "<p><strong>{}</strong></p>",
            failure_note(report.failed_items)
        );
    }
    let _ = write!(
        body,
        "<figure>{}<figcaption>Macro and micro precision, recall and F1</figcaption></figure>",
        critique_svg(report)
    );
    html_page("Critique meta-evaluation", &body)
}
