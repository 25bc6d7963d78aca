// The safetyj web app: choose and load a model, judge a dialogue, show the verdict,
// P(unsafe) and the streaming critique, or moderate B's response while it is typed
// out (checks move the gauge; the text stops where it crosses the threshold). The
// engine runs in a Web Worker (judge-client.js). State for tests is exposed as DOM
// attributes: body data-state / data-error / data-load-ms, #load-progress data-*
// (bytes, tensors), #result data-label / data-p-unsafe / data-time-to-verdict-ms /
// data-protocol / data-categories (the codes the judge named) / data-stream-checks /
// data-stream-stopped.

import { WorkerJudge } from "./judge-client.js";
import { EXAMPLES } from "./examples.js";
import { LANGUAGES, translate } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const LANGUAGE_KEY = "safetyj-ui-lang";

/** Everything the dynamic parts of the page are drawn from (redrawn on a language switch). */
const view = {
  lang: "en",
  models: [],
  source: null,
  judge: null,
  notice: null,
  progress: null,
  loadMs: null,
  cacheError: null,
  modelInfo: null,
  capabilities: null,
  verdict: null,
  critique: "",
  /** The stream demo: text shown so far, where it was last checked safe, checks, the crossing check. */
  stream: null,
  stopRequested: false,
  /** The "teach a policy" panel: the head trained last ({name, report, file}) and its status line. */
  trained: null,
  teachStatus: null,
  hint: null,
};

const t = (key, values) => translate(view.lang, key, values);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** The stream demo types a piece out every this many ms, and checks every this many response tokens. */
const TYPE_DELAY_MS = 60;
const STREAM_CHECK_EVERY = 4;

function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "?";
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes} B`;
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function setState(state) {
  document.body.dataset.state = state;
  const busy = ["loading", "judging", "streaming", "training"].includes(state);
  const usable = !["checking", "lost"].includes(state);
  $("load").disabled = busy || !usable;
  $("judge").disabled = busy || !usable || view.judge === null;
  $("stream").disabled = busy || !usable || view.judge === null;
  $("teach-train").disabled = busy || !usable || view.judge === null;
  $("teach-off").disabled = busy || !usable;
  $("teach-train").textContent = t(state === "training" ? "teachTraining" : "teachTrain");
  $("stop").hidden = state !== "judging" && state !== "streaming";
  $("load").textContent = t(state === "loading" ? "loading" : "load");
  $("judge").textContent = t(state === "judging" ? "judging" : "judge");
  $("stream").textContent = t(state === "streaming" ? "streaming" : "streamDemo");
}

/** Shows a message (`key` into the strings) above the page; `reload` adds the reload button. */
function showNotice(key, values = {}, { reload = false } = {}) {
  view.notice = { key, values, reload };
  renderNotice();
}

function clearNotice() {
  view.notice = null;
  renderNotice();
}

function renderNotice() {
  $("notice").hidden = view.notice === null;
  if (view.notice === null) return;
  $("notice-text").textContent = t(view.notice.key, view.notice.values);
  $("reload").hidden = !view.notice.reload;
}

function renderProgress() {
  const p = view.progress;
  $("load-progress").hidden = p === null;
  if (p === null) return;
  const box = $("load-progress");
  box.dataset.phase = p.phase;
  box.dataset.bytesDone = p.bytesDone;
  box.dataset.bytesTotal = p.bytesTotal;
  box.dataset.bytesFromCache = p.bytesFromCache;
  box.dataset.tensorsDone = p.tensorsDone;
  box.dataset.tensorsTotal = p.tensorsTotal;
  $("progress-bar").value = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 0;
  let text;
  if (p.phase === "ready" && view.loadMs !== null) {
    text = t("progressReady", { seconds: (view.loadMs / 1000).toFixed(1), cached: formatBytes(p.bytesFromCache), total: formatBytes(p.bytesTotal) });
  } else if (p.phase === "header") {
    text = t("progressHeader");
  } else {
    text = t("progressWeights", {
      done: formatBytes(p.bytesDone),
      total: formatBytes(p.bytesTotal),
      tensorsDone: p.tensorsDone,
      tensorsTotal: p.tensorsTotal,
      cached: formatBytes(p.bytesFromCache),
    });
  }
  if (view.cacheError) text += ` · ${t("cacheError", { message: view.cacheError })}`;
  $("progress-text").textContent = text;
}

function renderModel() {
  const info = view.modelInfo;
  $("model-info").hidden = info === null;
  // A model loaded by URL has standIn null; the server's index knows its preset.
  const standIn = info?.standIn ?? view.models.find((model) => model.url === view.source)?.standIn;
  $("stand-in").hidden = standIn !== true;
  if (info !== null) {
    const loaded = t("modelLoaded", { name: info.name, arch: info.arch, layers: info.layers, quant: info.quant, size: formatBytes(info.fileBytes) });
    $("model-info").textContent = info.head === null ? loaded : `${loaded} · ${t("verdictHead", { head: info.head })}`;
  }
  const caps = view.capabilities;
  if (caps !== null) document.body.dataset.backend = caps.backend;
  $("adapter").textContent = caps === null ? "" : caps.backend === "Cpu" ? t("adapterCpu", { adapter: caps.adapter }) : t("adapter", {
    adapter: caps.adapter || t("unnamedAdapter"),
    backend: caps.backend,
    f16: t(caps.shaderF16 ? "yes" : "no"),
    binding: formatBytes(caps.maxStorageBindingBytes),
  });
}

function renderVerdict() {
  const verdict = view.verdict;
  const result = $("result");
  if (verdict === null) {
    for (const key of ["label", "pUnsafe", "timeToVerdictMs", "totalMs", "critiqueStop", "protocol", "categories"]) delete result.dataset[key];
    if (view.stream?.last) {
      renderGauge(view.stream.last);
    } else {
      $("badge").textContent = "";
      $("badge").className = "badge pending";
      $("p-unsafe").textContent = "…";
      $("threshold").textContent = "";
      $("gauge-fill").style.width = "0";
    }
    for (const id of ["time-to-verdict", "total-time", "prompt-tokens", "template-used", "protocol"]) $(id).textContent = "…";
    for (const id of ["injection", "uncovered", "categories"]) $(id).hidden = true;
  } else {
    result.dataset.label = verdict.label;
    result.dataset.pUnsafe = String(verdict.p_unsafe);
    result.dataset.timeToVerdictMs = String(verdict.time_to_verdict_ms);
    result.dataset.totalMs = String(verdict.total_ms);
    result.dataset.critiqueStop = verdict.critique_stop ?? "";
    renderGauge(verdict);
    $("time-to-verdict").textContent = formatMs(verdict.time_to_verdict_ms);
    $("total-time").textContent = formatMs(verdict.total_ms);
    $("prompt-tokens").textContent = `${verdict.prompt_tokens} (${t("cachedTokens", { cached: verdict.cached_tokens })})`;
    $("template-used").textContent = t(verdict.lang === "zh" ? "langZh" : "langEn");
    renderProtocol(verdict);
    // The judge's injection defence: what it escaped, and whether the text addresses the judge.
    const sanitized = verdict.sanitized ?? [];
    $("injection").hidden = !verdict.injection_suspected && sanitized.length === 0;
    $("injection").textContent = [
      verdict.injection_suspected ? t("injectionSuspected") : "",
      sanitized.length > 0 ? t("neutralized", { items: sanitized.join(" ") }) : "",
    ].filter(Boolean).join(" ");
    if (verdict.critique !== null && verdict.critique !== undefined) view.critique = verdict.critique;
  }
  const critiqueMode = verdict === null ? selectedMode() === "critique" : verdict.mode === "critique";
  $("critique-box").hidden = !critiqueMode;
  $("critique").textContent = view.critique;
  $("critique-stop").textContent = verdict?.critique_stop ? t("critiqueStop", { reason: verdict.critique_stop }) : "";
}

/**
 * The protocol (with its label words' probabilities when it has more than two), a
 * warning when the judge was not trained on the dialogue's language, and the
 * protocol's categories as chips, those the judge named filled (title: the score).
 */
function renderProtocol(verdict) {
  const result = $("result");
  result.dataset.protocol = verdict.protocol;
  const words = verdict.label_probs.length > 2
    ? ` (${verdict.label_probs.map((l) => `${l.word} ${l.p.toFixed(3)}`).join(", ")})`
    : "";
  $("protocol").textContent = verdict.protocol + words;
  const languages = view.modelInfo?.languages ?? ["en", "zh"];
  $("uncovered").hidden = languages.includes(verdict.lang);
  $("uncovered").textContent = t("uncovered", { protocol: verdict.protocol, lang: t(verdict.lang === "zh" ? "langZh" : "langEn") });
  const categories = verdict.categories ?? [];
  result.dataset.categories = categories.filter((c) => c.flagged).map((c) => c.code).join(",");
  const box = $("categories");
  box.hidden = categories.length === 0;
  box.replaceChildren(...categories.map((category) => {
    const chip = document.createElement("span");
    chip.className = category.flagged ? "chip flagged" : "chip";
    chip.dataset.code = category.code;
    chip.textContent = category.code === category.name ? category.name : `${category.code} ${category.name}`;
    if (category.score !== null) chip.title = t("categoryScore", { score: category.score.toFixed(3) });
    return chip;
  }));
}

/** The badge and the P(unsafe) gauge, from a verdict or a stream check. */
function renderGauge({ label, p_unsafe, threshold }) {
  $("badge").textContent = t(label === "unsafe" ? "unsafe" : "safe");
  $("badge").className = `badge ${label}`;
  $("p-unsafe").textContent = p_unsafe.toFixed(3);
  $("threshold").textContent = t("threshold", { threshold });
  $("gauge-fill").style.width = `${(p_unsafe * 100).toFixed(1)}%`;
  $("gauge-fill").className = `gauge-fill ${label}`;
  $("gauge-threshold").style.left = `${(threshold * 100).toFixed(1)}%`;
  $("gauge").setAttribute("aria-valuenow", String(p_unsafe));
}

/** The stream demo's text (what crossed the threshold marked) and its status line. */
function renderStream() {
  const stream = view.stream;
  const result = $("result");
  $("stream-box").hidden = stream === null;
  if (stream === null) {
    delete result.dataset.streamChecks;
    delete result.dataset.streamStopped;
    return;
  }
  result.dataset.streamChecks = String(stream.checks);
  result.dataset.streamStopped = String(stream.crossed !== null);
  const cut = stream.crossed === null ? stream.text.length : stream.safeUpTo;
  const shown = [document.createTextNode(stream.text.slice(0, cut))];
  if (stream.crossed !== null) {
    const mark = document.createElement("mark");
    mark.textContent = stream.text.slice(cut);
    shown.push(mark);
  }
  $("stream-text").replaceChildren(...shown);
  const last = stream.last;
  let status = "";
  if (stream.crossed !== null) {
    status = t("streamStopped", { tokens: stream.crossed.response_tokens, p: stream.crossed.p_unsafe.toFixed(3) });
  } else if (stream.finished) {
    status = t("streamFinished", { checks: stream.checks });
  } else if (last !== null) {
    status = t("streamProgress", { checks: stream.checks, tokens: last.response_tokens, prefilled: last.prefilled_tokens, ms: formatMs(last.ms) });
  }
  $("stream-status").textContent = status;
}

function renderHint() {
  $("judge-hint").textContent = view.hint === null ? "" : t(view.hint);
}

/** Redraws every translated string: static (data-i18n) and dynamic. */
function applyLanguage(lang) {
  view.lang = LANGUAGES.includes(lang) ? lang : "en";
  document.documentElement.lang = view.lang === "zh" ? "zh-CN" : "en";
  document.body.dataset.uiLang = view.lang;
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) element.placeholder = t(element.dataset.i18nPlaceholder);
  document.title = t("title");
  fillExamples();
  fillModels(view.models);
  setState(document.body.dataset.state);
  renderNotice();
  renderProgress();
  renderModel();
  renderTeach();
  if (!$("result").hidden) {
    renderVerdict();
    renderStream();
  }
  renderHint();
}

function fillExamples() {
  const select = $("example-select");
  const chosen = select.value;
  select.replaceChildren(new Option(t("examplePick"), ""));
  for (const [lang, key] of [["en", "examplesEnglish"], ["zh", "examplesChinese"]]) {
    const group = document.createElement("optgroup");
    group.label = t(key);
    for (const example of EXAMPLES[lang]) group.append(new Option(example.title, example.id));
    select.append(group);
  }
  select.value = chosen;
}

function fillModels(models) {
  view.models = models;
  const select = $("model-select");
  const chosen = select.value;
  if (models.length === 0) {
    select.replaceChildren(new Option(t("noServerModels"), ""));
    return;
  }
  select.replaceChildren(...models.map((model) => {
    const label = `${model.preset ?? model.file} (${formatBytes(model.bytes)})`;
    return new Option(label, model.url);
  }));
  const preferred = models.some((model) => model.url === chosen) ? chosen : models.find((model) => model.default)?.url;
  if (preferred !== undefined) select.value = preferred;
}

async function fetchModels() {
  try {
    const response = await fetch("models/index.json", { cache: "no-store" });
    if (!response.ok) return [];
    const index = await response.json();
    return Array.isArray(index.models) ? index.models : [];
  } catch {
    return [];
  }
}

function selectedMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

/** A clear error on the page; a lost device switches the page to "lost" with a reload button. */
function fail(error) {
  const message = error instanceof Error ? error.message : String(error);
  if (error?.deviceLost) {
    document.body.dataset.error = message;
    showNotice("deviceLost", {}, { reload: true });
    setState("lost");
    return;
  }
  document.body.dataset.error = message;
  showNotice("errorPrefix", { message });
  setState("error");
}

async function loadModel() {
  const source = $("model-url").value.trim() || $("model-select").value;
  if (source === "") return;
  clearNotice();
  delete document.body.dataset.error;
  delete document.body.dataset.loadMs;
  if (view.judge !== null) {
    view.judge.dispose();
    view.judge = null;
  }
  view.source = source;
  view.trained = null;
  view.teachStatus = null;
  renderTeach();
  view.modelInfo = null;
  view.capabilities = null;
  view.cacheError = null;
  view.loadMs = null;
  view.progress = { phase: "header", bytesDone: 0, bytesTotal: 0, bytesFromCache: 0, tensorsDone: 0, tensorsTotal: 0 };
  renderModel();
  renderProgress();
  setState("loading");
  const started = performance.now();
  try {
    const threshold = Number($("threshold-input").value);
    view.judge = await WorkerJudge.load(source, {
      cache: $("use-cache").checked,
      // Left out when empty: the preset's protocol, else the model name's, else Safety-J's.
      protocol: $("protocol-select").value || undefined,
      // "auto": WebGPU on a hardware adapter, else the CPU engine (WebAssembly SIMD).
      device: $("device-select").value,
      threshold: Number.isFinite(threshold) ? threshold : undefined,
      onProgress: (progress) => {
        view.progress = progress;
        if (progress.cacheError) view.cacheError = progress.cacheError;
        renderProgress();
      },
    });
    view.loadMs = performance.now() - started;
    document.body.dataset.loadMs = String(Math.round(view.loadMs));
    view.progress = { ...view.progress, phase: "ready" };
    view.modelInfo = view.judge.modelInfo();
    view.capabilities = view.judge.capabilities();
    renderProgress();
    renderModel();
    setState("ready");
  } catch (error) {
    view.progress = null;
    renderProgress();
    fail(error);
  }
}

/**
 * The labelled dialogues pasted into the panel, one JSON object per line (blank
 * lines skipped); throws naming the first bad line.
 */
function readExamples() {
  const examples = [];
  for (const [index, line] of $("teach-examples").value.split("\n").entries()) {
    if (line.trim() === "") continue;
    let example;
    try {
      example = JSON.parse(line);
    } catch (error) {
      throw new Error(t("teachBadLine", { line: index + 1, message: error.message }));
    }
    if (typeof example?.query !== "string" || typeof example?.response !== "string" || !["safe", "unsafe"].includes(example?.label)) {
      throw new Error(t("teachBadLine", { line: index + 1, message: 'needs "query", "response" and "label": "safe" or "unsafe"' }));
    }
    examples.push({ query: example.query, response: example.response, label: example.label, dataset: typeof example.dataset === "string" ? example.dataset : undefined });
  }
  return examples;
}

/** Trains a verdict head on the pasted dialogues and makes it decide verdicts. */
async function trainHead() {
  let examples;
  try {
    examples = readExamples();
  } catch (error) {
    view.teachStatus = { text: error.message };
    renderTeach();
    return;
  }
  if (examples.length === 0) {
    view.teachStatus = { key: "teachNoExamples" };
    renderTeach();
    return;
  }
  clearNotice();
  setState("training");
  try {
    const trained = await view.judge.trainHead(examples, {
      onProgress: (done, total) => {
        view.teachStatus = { key: "teachProgress", values: { done, total } };
        renderTeach();
      },
    });
    await view.judge.useHead(trained.file);
    view.trained = trained;
    const report = trained.report;
    view.teachStatus = { key: "teachDone", values: {
      name: trained.name, layer: report.layer, c: report.c, train: report.train_items, heldout: report.heldout_items,
      head: percent(report.heldout_mean_accuracy_head), model: percent(report.heldout_mean_accuracy_model),
    } };
    view.modelInfo = view.judge.modelInfo();
    renderModel();
    renderTeach();
    setState("ready");
  } catch (error) {
    view.teachStatus = null;
    renderTeach();
    fail(error);
  }
}

/** Goes back to the model's own verdict. */
async function headOff() {
  try {
    await view.judge.useHead(null);
    view.teachStatus = { key: "teachOffDone" };
    view.modelInfo = view.judge.modelInfo();
    renderModel();
    renderTeach();
  } catch (error) {
    fail(error);
  }
}

/** Saves the trained head file. */
function downloadHead() {
  const url = URL.createObjectURL(new Blob([view.trained.file], { type: "application/octet-stream" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `${view.trained.name.replace(/[^\w.-]+/g, "-")}.head.safetensors`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

const percent = (x) => `${(100 * x).toFixed(1)}%`;

function renderTeach() {
  const status = view.teachStatus;
  $("teach-status").textContent = status === null ? "" : status.key ? t(status.key, status.values) : status.text;
  const report = view.trained?.report ?? null;
  const attached = view.trained !== null && view.modelInfo?.head === view.trained.name;
  $("teach-download").hidden = view.trained === null;
  $("teach-off").hidden = !attached;
  $("teach-report").hidden = report === null;
  const body = $("teach-report").querySelector("tbody");
  body.replaceChildren();
  for (const [set, figures] of Object.entries(report?.heldout_head ?? {})) {
    const row = document.createElement("tr");
    row.dataset.set = set;
    for (const text of [set, figures.items, percent(figures.accuracy), percent(report.heldout_model[set].accuracy)]) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.append(cell);
    }
    body.append(row);
  }
}

/** The dialogue typed in, or null (with a hint) when there is no model or no text. */
function readDialogue() {
  const query = $("query").value;
  const response = $("response").value;
  if (view.judge === null) {
    view.hint = "needModel";
  } else if (query.trim() === "" || response.trim() === "") {
    view.hint = "needDialogue";
  } else {
    view.hint = null;
  }
  renderHint();
  return view.hint === null ? { query, response } : null;
}

/** Clears the last result and shows the result section empty. */
function startResult(stream) {
  clearNotice();
  delete document.body.dataset.error;
  view.verdict = null;
  view.critique = "";
  view.stopRequested = false;
  view.stream = stream;
  $("result").hidden = false;
  renderVerdict();
  renderStream();
}

async function judgeDialogue() {
  const dialogue = readDialogue();
  if (dialogue === null) return;
  const { query, response } = dialogue;
  const mode = selectedMode();
  startResult(null);
  setState("judging");
  try {
    const request = { query, response, lang: $("lang").value, mode };
    if (mode === "critique") {
      request.onCritique = (piece) => {
        view.critique += piece;
        $("critique").textContent = view.critique;
        return !view.stopRequested;
      };
    }
    view.verdict = await view.judge.evaluate(request);
    renderVerdict();
    setState("ready");
  } catch (error) {
    fail(error);
  }
}

/** `text` in the pieces a model streams: words with the spaces before them, CJK characters one by one. */
function streamPieces(text) {
  return text.match(/\s*(?:[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]|[^\s\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+)|\s+$/gu) ?? [];
}

/** Types B's response out piece by piece through a moderation stream: each check moves the gauge; the text stops at the first check over the threshold. */
async function streamDialogue() {
  const dialogue = readDialogue();
  if (dialogue === null) return;
  startResult({ text: "", safeUpTo: 0, checks: 0, last: null, crossed: null, finished: false });
  setState("streaming");
  const stream = view.stream;
  let moderation = null;
  try {
    moderation = await view.judge.moderateStream({ query: dialogue.query, lang: $("lang").value, checkEvery: STREAM_CHECK_EVERY });
    for (const piece of streamPieces(dialogue.response)) {
      if (view.stopRequested) break;
      await sleep(TYPE_DELAY_MS);
      stream.text += piece;
      const check = await moderation.push(piece);
      if (check !== null) {
        stream.checks += 1;
        stream.last = check;
        if (check.label === "unsafe") stream.crossed = check;
        else stream.safeUpTo = stream.text.length;
        renderVerdict();
      }
      renderStream();
      if (stream.crossed !== null) break;
    }
    view.verdict = await moderation.finish();
    stream.finished = true;
    renderVerdict();
    renderStream();
    setState("ready");
  } catch (error) {
    moderation?.close();
    fail(error);
  }
}

function pickExample() {
  const id = $("example-select").value;
  const example = [...EXAMPLES.en, ...EXAMPLES.zh].find((candidate) => candidate.id === id);
  if (!example) return;
  $("query").value = example.query;
  $("response").value = example.response;
}

/**
 * Checks WebGPU on the page before anything is loaded: "hardware", "software" (a
 * fallback adapter such as SwiftShader, which "auto" passes over for the CPU) or
 * "none"; the last two with a notice that the judge will run on the CPU.
 */
async function checkWebGpu() {
  if (!("gpu" in navigator)) {
    showNotice("noWebGpu");
    return "none";
  }
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (adapter === null) {
      showNotice("noAdapter");
      return "none";
    }
    if (adapter.info?.isFallbackAdapter) {
      showNotice("softwareGpu");
      return "software";
    }
  } catch {
    showNotice("noAdapter");
    return "none";
  }
  return "hardware";
}

async function start() {
  const saved = localStorage.getItem(LANGUAGE_KEY);
  applyLanguage(saved ?? (navigator.language?.toLowerCase().startsWith("zh") ? "zh" : "en"));
  $("language-toggle").addEventListener("click", () => {
    const next = view.lang === "en" ? "zh" : "en";
    localStorage.setItem(LANGUAGE_KEY, next);
    applyLanguage(next);
  });
  $("reload").addEventListener("click", () => location.reload());
  $("load").addEventListener("click", loadModel);
  $("teach-train").addEventListener("click", trainHead);
  $("teach-off").addEventListener("click", headOff);
  $("teach-download").addEventListener("click", downloadHead);
  $("teach-file").addEventListener("change", async () => {
    const file = $("teach-file").files?.[0];
    if (file) $("teach-examples").value = await file.text();
  });
  $("judge").addEventListener("click", judgeDialogue);
  $("stream").addEventListener("click", streamDialogue);
  $("stop").addEventListener("click", () => { view.stopRequested = true; });
  $("example-select").addEventListener("change", pickExample);
  $("model-select").addEventListener("change", () => { $("model-url").value = ""; });
  document.querySelectorAll('input[name="mode"]').forEach((radio) => radio.addEventListener("change", () => {
    if (view.verdict === null && !$("result").hidden) renderVerdict();
  }));

  const [models, gpu] = await Promise.all([fetchModels(), checkWebGpu()]);
  fillModels(models);
  if (gpu === "none") {
    $("device-select").value = "cpu";
    $("device-select").querySelector('option[value="gpu"]').disabled = true;
  }
  setState("idle");
}

start().catch(fail);
