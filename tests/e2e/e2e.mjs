// End-to-end test of the web app in headless Chromium (WebGPU on SwiftShader):
// serves www/ and the real model, loads it in the page (streamed by HTTP Range),
// judges an English dialogue in verdict mode on WebGPU ("run on: GPU") and checks
// that the label and P(unsafe) shown equal what the native WGSL engine
// (`safetyj judge --device gpu`) returns for the same input and model. Then it
// switches the interface to 中文, reloads, checks that the second load came from
// Cache Storage, streams and stops a critique (on the tiny random model, for time),
// judges with the Qwen3Guard and Llama Guard protocols (the tiny model served under
// their file names: the name chooses the protocol), the categories shown as chips
// equal to the native CLI's, checks that "auto" on SwiftShader runs on the CPU,
// judges the English and a Chinese dialogue on a page without WebGPU (the CPU
// engine) as the native CPU engine does, and teaches that page a policy as
// `safetyj head train` does. Screenshots and the page's console go to
// $SAFETYJ_ARTIFACTS (default target/e2e-artifacts); figures are printed as JSON
// lines (metric=...).
//
// Needs: www/pkg (bash www/build.sh), target/debug/safetyj (cargo build), the model
// in the models folder (tests/fixtures/fetch_models.sh), `npm ci` here.
// Run: node tests/e2e/e2e.mjs   (.ci/e2e.sh does all of it)

import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { bundleSizes } from "../../www/build.mjs";
import { defaultModelsDir } from "../../www/serve.mjs";
import { EXAMPLES } from "../../www/examples.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const ARTIFACTS = resolve(process.env.SAFETYJ_ARTIFACTS ?? join(REPO, "target", "e2e-artifacts"));
const MODELS_DIR = defaultModelsDir();
const MODEL_FILE = process.env.SAFETYJ_E2E_MODEL ?? "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
/** The model of the critique-streaming check (tiny, random weights; see MODELS.md). */
const CRITIQUE_MODEL_FILE = process.env.SAFETYJ_E2E_CRITIQUE_MODEL ?? "tinycoder-tiny.gguf";
const NATIVE_BIN = process.env.SAFETYJ_BIN ?? join(REPO, "target", "debug", "safetyj");
const CHROMIUM = process.env.SAFETYJ_CHROMIUM ?? "/usr/bin/chromium";
/** Largest |P(unsafe) browser − P(unsafe) native| accepted (SwiftShader vs lavapipe float order). */
const P_UNSAFE_TOLERANCE = 2e-3;
/** The dialogues judged on the CPU engine in the page, against the native CPU engine. */
const DIALOGUES = [EXAMPLES.en.find((e) => e.id === "en-walkway"), EXAMPLES.zh.find((e) => e.id === "zh-explosive")];
/**
 * Those judged on WebGPU in the page, against the native WGSL engine: one, since a
 * verdict on SwiftShader takes minutes (the Chinese one is judged on the CPU).
 */
const GPU_DIALOGUES = DIALOGUES.slice(0, 1);
/**
 * The guard protocols checked in the browser: a served file name (a link to the tiny
 * model), the protocol its name chooses, and that protocol's number of categories.
 */
const GUARDS = [
  { file: "qwen3guard-gen-tiny.gguf", protocol: "qwen3guard-gen", categories: 9 },
  { file: "llama-guard-3-1b-tiny.gguf", protocol: "llama-guard-3-1b", categories: 13 },
];
const LOAD_TIMEOUT_MS = 20 * 60 * 1000;
const JUDGE_TIMEOUT_MS = 15 * 60 * 1000;
/** Flags that give WebGPU in headless Chromium as root (ENVIRONMENT.md). */
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

const failures = [];
const summary = { model: MODEL_FILE };

function metric(record) {
  console.log(JSON.stringify(record));
  (summary.metrics ??= []).push(record);
}

function check(condition, message) {
  if (condition) {
    console.log(`ok: ${message}`);
  } else {
    console.log(`FAIL: ${message}`);
    failures.push(message);
  }
}

function requireFile(path, hint) {
  if (!existsSync(path)) throw new Error(`${path} is missing: ${hint}`);
}

/** Runs the native CLI on every dialogue in one process (batch mode) with the browser's kernels. */
async function nativeVerdicts(dir) {
  const input = join(dir, "dialogues.jsonl");
  const output = join(dir, "verdicts.jsonl");
  writeFileSync(input, GPU_DIALOGUES.map(({ query, response }) => JSON.stringify({ query, response })).join("\n") + "\n");
  const args = ["judge", "--device", "gpu", "--model", join(MODELS_DIR, MODEL_FILE), "--input", input, "--output", output, "--mode", "verdict"];
  console.log(`native: ${NATIVE_BIN} ${args.join(" ")}`);
  const started = Date.now();
  // The browser has neither shader-f16 nor (through wgpu) subgroups: the native run uses the same f32 kernels.
  const env = { ...process.env, SAFETYJ_DISABLE: "f16,subgroups" };
  await new Promise((done, fail) => {
    const child = spawn(NATIVE_BIN, args, { env, stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", fail);
    child.on("exit", (code) => (code === 0 ? done() : fail(new Error(`native safetyj judge exited with ${code}`))));
  });
  // One {"line": N, "verdict": {...}} (or {"line": N, "error": ...}) per input line.
  const records = readFileSync(output, "utf8").trim().split("\n").map((line) => JSON.parse(line));
  metric({ metric: "native_batch_ms", dialogues: GPU_DIALOGUES.length, ms: Date.now() - started });
  const verdicts = GPU_DIALOGUES.map((_, index) => records.find((record) => record.line === index + 1)?.verdict);
  if (verdicts.some((verdict) => verdict === undefined)) {
    throw new Error(`native verdicts are incomplete: ${JSON.stringify(records)}`);
  }
  return verdicts;
}

/**
 * The native CLI's verdict (`--json`; on the GPU with the browser's kernels) for
 * `example` on the model at `path`, with `extra` arguments.
 */
async function nativeVerdict(path, example, device, extra = []) {
  const args = ["judge", "--json", "--device", device, "--model", path, "--query", example.query, "--response", example.response, ...extra];
  const env = { ...process.env, SAFETYJ_DISABLE: "f16,subgroups" };
  const stdout = await new Promise((done, fail) => {
    const child = spawn(NATIVE_BIN, args, { env, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.on("error", fail);
    child.on("exit", (code) => (code === 0 ? done(out) : fail(new Error(`native safetyj judge --model ${path} exited with ${code}`))));
  });
  return JSON.parse(stdout);
}

/** Runs the native CLI with `args` to completion (its output to this log). */
async function runNative(args) {
  await new Promise((done, fail) => {
    const child = spawn(NATIVE_BIN, args, { stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", fail);
    child.on("exit", (code) => (code === 0 ? done() : fail(new Error(`safetyj ${args.join(" ")} exited with ${code}`))));
  });
}

/** The dialogues the page is taught a policy with: 12 safe, 12 unsafe. */
const POLICY = Array.from({ length: 24 }, (_, i) => ({
  query: `Question ${i}: how do I deal with my neighbour?`,
  response: i % 2 ? `Pour oil on his stairs at night so he falls (${i}).` : `Talk to him calmly and listen (${i}).`,
  label: i % 2 ? "unsafe" : "safe",
}));

/** A models folder for the server: links to the two models, and to the tiny one under each guard's name. */
async function servedModels(dir) {
  const served = join(dir, "models");
  mkdirSync(served);
  for (const file of [MODEL_FILE, CRITIQUE_MODEL_FILE]) await symlink(join(MODELS_DIR, file), join(served, file));
  for (const guard of GUARDS) await symlink(join(MODELS_DIR, CRITIQUE_MODEL_FILE), join(served, guard.file));
  return served;
}

/** Starts www/serve.mjs on a free port over `modelsDir`; resolves to { url, stop }. */
function startServer(modelsDir) {
  const child = spawn(process.execPath, [join(REPO, "www", "serve.mjs"), "--port", "0", "--models", modelsDir], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((done, fail) => {
    let buffered = "";
    child.on("error", fail);
    child.on("exit", (code) => fail(new Error(`the server exited early (${code})`)));
    child.stdout.on("data", (chunk) => {
      buffered += chunk;
      const match = /serving (http:\/\/127\.0\.0\.1:\d+\/)/.exec(buffered);
      if (match) done({ url: match[1], stop: () => child.kill() });
    });
  });
}

async function screenshot(page, name) {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

/** Waits until body data-state is one of `states`; fails on error/lost with the page's message. */
async function waitForState(page, states, timeout, what) {
  const started = Date.now();
  let lastReport = started;
  for (;;) {
    const { state, error, progress } = await page.evaluate(() => ({
      state: document.body.dataset.state,
      error: document.body.dataset.error ?? null,
      progress: document.getElementById("progress-text")?.textContent ?? "",
    }));
    if (states.includes(state)) return state;
    if (state === "error" || state === "lost") {
      const notice = await page.locator("#notice-text").textContent();
      throw new Error(`${what}: the page is in state "${state}": ${error ?? notice}`);
    }
    if (Date.now() - started > timeout) throw new Error(`${what}: still "${state}" after ${timeout / 1000} s`);
    if (Date.now() - lastReport > 30000) {
      console.log(`… ${what}: ${state} ${progress} (${Math.round((Date.now() - started) / 1000)} s)`);
      lastReport = Date.now();
    }
    await page.waitForTimeout(250);
  }
}

async function loadModel(page, label) {
  await page.selectOption("#model-select", `models/${encodeURIComponent(MODEL_FILE)}`);
  await page.selectOption("#device-select", label === "cpu" ? "cpu" : "gpu");
  await page.click("#load");
  await waitForState(page, ["ready"], LOAD_TIMEOUT_MS, `loading ${MODEL_FILE} (${label})`);
  const loaded = await page.evaluate(() => {
    const box = document.getElementById("load-progress").dataset;
    return {
      loadMs: Number(document.body.dataset.loadMs),
      bytesTotal: Number(box.bytesTotal),
      bytesDone: Number(box.bytesDone),
      bytesFromCache: Number(box.bytesFromCache),
      tensorsDone: Number(box.tensorsDone),
      tensorsTotal: Number(box.tensorsTotal),
    };
  });
  metric({ metric: "load_ms", cache: label, ms: loaded.loadMs, bytes_total: loaded.bytesTotal, bytes_from_cache: loaded.bytesFromCache, tensors: loaded.tensorsTotal });
  return loaded;
}

async function judge(page, example, mode) {
  await page.selectOption("#example-select", example.id);
  await page.check(`input[name="mode"][value="${mode}"]`);
  await page.selectOption("#lang", "auto");
  check(await page.inputValue("#query") === example.query, `${example.id}: the example fills A's query`);
  await page.click("#judge");
  await page.waitForFunction(() => document.body.dataset.state === "judging" || document.getElementById("result").dataset.label !== undefined, null, { polling: 100 });
}

async function readVerdict(page) {
  return page.evaluate(() => {
    const data = document.getElementById("result").dataset;
    return {
      label: data.label,
      pUnsafe: Number(data.pUnsafe),
      timeToVerdictMs: Number(data.timeToVerdictMs),
      totalMs: Number(data.totalMs),
      critiqueStop: data.critiqueStop,
      badge: document.getElementById("badge").textContent,
      critique: document.getElementById("critique").textContent,
    };
  });
}

async function main() {
  requireFile(join(REPO, "www", "pkg", "safetyj.js"), "build the web engine first: bash www/build.sh");
  requireFile(join(MODELS_DIR, MODEL_FILE), `fetch it: bash tests/fixtures/fetch_models.sh ${MODELS_DIR} qwen2.5-coder-0.5b`);
  requireFile(join(MODELS_DIR, CRITIQUE_MODEL_FILE), `fetch it: bash tests/fixtures/fetch_models.sh ${MODELS_DIR} tinycoder`);
  requireFile(NATIVE_BIN, "build the CLI first: cargo build --bin safetyj");
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const line of bundleSizes(join(REPO, "www", "pkg"), "safetyj")) metric(line);

  const scratch = await mkdtemp(join(tmpdir(), "safetyj-e2e-"));
  const native = await nativeVerdicts(scratch);
  const served = await servedModels(scratch);
  const server = await startServer(served);
  const consoleLog = join(ARTIFACTS, "console.log");
  writeFileSync(consoleLog, "");
  // A fresh on-disk profile: an off-the-record context's storage quota is too small to cache the model.
  const profile = join(scratch, "profile");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1100, height: 900 },
    locale: "en-US",
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    page.on("console", (message) => appendFileSync(consoleLog, `[${message.type()}] ${message.text()}\n`));
    page.on("pageerror", (error) => {
      appendFileSync(consoleLog, `[pageerror] ${error.message}\n`);
      failures.push(`uncaught error in the page: ${error.message}`);
    });

    await page.goto(server.url);
    const state = await waitForState(page, ["idle"], 60000, "opening the page");
    check(state === "idle", "the page finds a WebGPU adapter");
    // WebGPU here is SwiftShader, which "auto" passes over for the CPU engine: the
    // WGSL engine is chosen by hand ("GPU"), as a user with such a browser could.
    await screenshot(page, "01-start");

    const cold = await loadModel(page, "cold");
    check(await page.evaluate(() => document.body.dataset.backend) !== "Cpu", "the page runs the model on WebGPU");
    check(cold.bytesTotal > 0 && cold.tensorsDone === cold.tensorsTotal, `cold load fetched ${cold.bytesTotal} bytes, ${cold.tensorsDone}/${cold.tensorsTotal} tensors`);
    await screenshot(page, "02-loaded");

    for (const [index, example] of GPU_DIALOGUES.entries()) {
      await judge(page, example, "verdict");
      await waitForState(page, ["ready"], JUDGE_TIMEOUT_MS, `judging ${example.id}`);
      const shown = await readVerdict(page);
      const want = native[index];
      const difference = Math.abs(shown.pUnsafe - want.p_unsafe);
      metric({ metric: "time_to_verdict_ms", dialogue: example.id, browser: shown.timeToVerdictMs, native_lavapipe: want.time_to_verdict_ms, prompt_tokens: want.prompt_tokens });
      metric({ metric: "p_unsafe", dialogue: example.id, browser: shown.pUnsafe, native: want.p_unsafe, difference });
      check(shown.label === want.label, `${example.id}: label shown "${shown.label}" equals native "${want.label}"`);
      check(Number.isFinite(shown.pUnsafe) && difference <= P_UNSAFE_TOLERANCE, `${example.id}: P(unsafe) shown ${shown.pUnsafe} is within ${P_UNSAFE_TOLERANCE} of native ${want.p_unsafe}`);
      check(shown.badge === (shown.label === "unsafe" ? "UNSAFE" : "SAFE"), `${example.id}: the badge reads ${shown.badge}`);
      await screenshot(page, `03-verdict-${example.id}`);
    }

    await page.click("#language-toggle");
    const zh = await page.evaluate(() => ({ lang: document.body.dataset.uiLang, badge: document.getElementById("badge").textContent, judge: document.getElementById("judge").textContent }));
    check(zh.lang === "zh" && ["安全", "不安全"].includes(zh.badge) && zh.judge === "评判", `the 中文 interface: badge ${zh.badge}, button ${zh.judge}`);
    await screenshot(page, "04-verdict-zh-interface");
    await page.click("#language-toggle");

    await page.reload();
    await waitForState(page, ["idle"], 60000, "reopening the page");
    const warm = await loadModel(page, "warm");
    check(warm.bytesTotal === cold.bytesTotal, `the reload needs the same ${cold.bytesTotal} bytes`);
    check(warm.bytesFromCache === warm.bytesTotal, `the reload came from the cache (bytesFromCache ${warm.bytesFromCache} == bytesTotal ${warm.bytesTotal})`);
    await screenshot(page, "05-reloaded-from-cache");

    // Critique mode through the real engine: pieces stream into the page and Stop ends
    // the critique. On the tiny random model (a critique prefill of the 0.5B model
    // takes minutes on SwiftShader); it never emits a stop token, so Stop decides.
    await page.fill("#model-url", `models/${encodeURIComponent(CRITIQUE_MODEL_FILE)}`);
    await page.selectOption("#device-select", "gpu");
    await page.click("#load");
    await waitForState(page, ["ready"], LOAD_TIMEOUT_MS, `loading ${CRITIQUE_MODEL_FILE}`);
    await judge(page, DIALOGUES[0], "critique");
    await page.waitForFunction(() => document.getElementById("critique").textContent.length >= 4, null, { polling: 100, timeout: JUDGE_TIMEOUT_MS });
    await page.click("#stop");
    await waitForState(page, ["ready"], JUDGE_TIMEOUT_MS, "stopping the critique");
    const critiqued = await readVerdict(page);
    check(critiqued.critiqueStop === "cancelled", `Stop ends the critique (critique_stop "${critiqued.critiqueStop}")`);
    check(critiqued.critique.length >= 4, `the critique streamed into the page (${critiqued.critique.length} characters)`);
    await screenshot(page, "06-critique-stopped");

    // The guard protocols: the page shows the protocol, the label words, and every
    // category as a chip, those named filled, as the native CLI gives them.
    await page.fill("#threshold-input", "0");
    for (const guard of GUARDS) {
      const example = DIALOGUES[0];
      // Threshold 0: unsafe, so the guard names its categories.
      const want = await nativeVerdict(join(served, guard.file), example, "gpu", ["--threshold", "0"]);
      await page.fill("#model-url", `models/${encodeURIComponent(guard.file)}`);
      await page.click("#load");
      await waitForState(page, ["ready"], LOAD_TIMEOUT_MS, `loading ${guard.file}`);
      await judge(page, example, "verdict");
      await waitForState(page, ["ready"], JUDGE_TIMEOUT_MS, `judging with ${guard.protocol}`);
      const shown = await page.evaluate(() => {
        const result = document.getElementById("result");
        return {
          label: result.dataset.label,
          pUnsafe: Number(result.dataset.pUnsafe),
          protocol: result.dataset.protocol,
          named: result.dataset.categories,
          chips: document.querySelectorAll("#categories .chip").length,
          filled: document.querySelectorAll("#categories .chip.flagged").length,
          protocolText: document.getElementById("protocol").textContent,
        };
      });
      const wantNamed = want.categories.filter((c) => c.flagged).map((c) => c.code);
      metric({ metric: "guard_verdict", protocol: guard.protocol, browser: shown, native: { label: want.label, p_unsafe: want.p_unsafe, named: wantNamed } });
      check(want.protocol === guard.protocol && shown.protocol === guard.protocol, `${guard.file}: the protocol is ${guard.protocol} (page ${shown.protocol}, native ${want.protocol})`);
      check(shown.label === "unsafe" && want.label === "unsafe", `${guard.protocol}: threshold 0 gives unsafe (page ${shown.label})`);
      check(Math.abs(shown.pUnsafe - want.p_unsafe) <= P_UNSAFE_TOLERANCE, `${guard.protocol}: P(unsafe) shown ${shown.pUnsafe} is within ${P_UNSAFE_TOLERANCE} of native ${want.p_unsafe}`);
      check(shown.chips === guard.categories && want.categories.length === guard.categories, `${guard.protocol}: ${shown.chips} category chips (native ${want.categories.length})`);
      check(shown.named === wantNamed.join(",") && shown.filled === wantNamed.length, `${guard.protocol}: the categories named "${shown.named}" equal native "${wantNamed.join(",")}"`);
      check(shown.protocolText.startsWith(guard.protocol), `${guard.protocol}: the page names the protocol ("${shown.protocolText}")`);
      await screenshot(page, `07-guard-${guard.protocol}`);
    }

    // "auto" on a software adapter (SwiftShader here) runs the model on the CPU engine.
    const fallback = await page.evaluate(async () => (await navigator.gpu.requestAdapter())?.info.isFallbackAdapter === true);
    await page.fill("#model-url", "");
    await page.selectOption("#model-select", `models/${encodeURIComponent(MODEL_FILE)}`);
    await page.selectOption("#device-select", "auto");
    await page.click("#load");
    await waitForState(page, ["ready"], LOAD_TIMEOUT_MS, `loading ${MODEL_FILE} with device auto`);
    const autoBackend = await page.evaluate(() => document.body.dataset.backend);
    check(autoBackend === (fallback ? "Cpu" : "BrowserWebGpu"), `"auto" on ${fallback ? "a software (fallback)" : "a hardware"} WebGPU adapter runs on ${autoBackend}`);

    // A page without WebGPU runs the model on the CPU engine (WebAssembly SIMD), the
    // weights from Cache Storage: the verdict equals the native CPU engine's.
    const cpuPage = await context.newPage();
    cpuPage.on("pageerror", (error) => failures.push(`uncaught error in the CPU page: ${error.message}`));
    await cpuPage.addInitScript(() => { delete Object.getPrototypeOf(navigator).gpu; });
    await cpuPage.goto(server.url);
    await waitForState(cpuPage, ["idle"], 60000, "opening the page without WebGPU");
    const onCpu = await loadModel(cpuPage, "cpu");
    check(await cpuPage.evaluate(() => document.body.dataset.backend) === "Cpu", `without WebGPU the model runs on the CPU (${await cpuPage.textContent("#adapter")})`);
    check(onCpu.bytesFromCache === onCpu.bytesTotal, `the CPU load came from the cache (${onCpu.bytesFromCache} of ${onCpu.bytesTotal} bytes)`);
    for (const example of DIALOGUES) {
      const wantCpu = await nativeVerdict(join(MODELS_DIR, MODEL_FILE), example, "cpu");
      await judge(cpuPage, example, "verdict");
      await waitForState(cpuPage, ["ready"], JUDGE_TIMEOUT_MS, `judging ${example.id} on the CPU`);
      const shownCpu = await readVerdict(cpuPage);
      const cpuDifference = Math.abs(shownCpu.pUnsafe - wantCpu.p_unsafe);
      metric({ metric: "time_to_verdict_ms_cpu", dialogue: example.id, browser_wasm: shownCpu.timeToVerdictMs, native_cpu: wantCpu.time_to_verdict_ms, prompt_tokens: wantCpu.prompt_tokens, load_ms: onCpu.loadMs });
      check(shownCpu.label === wantCpu.label && cpuDifference <= 1e-3, `${example.id} on the CPU: ${shownCpu.label} P(unsafe) ${shownCpu.pUnsafe}, native CPU ${wantCpu.label} ${wantCpu.p_unsafe}`);
      await screenshot(cpuPage, `08-cpu-verdict-${example.id}`);
    }

    // Teach a policy in the page (the tiny model, CPU engine): the head trained there
    // matches the one `safetyj head train` fits on the same dialogues natively.
    const policyFile = join(scratch, "policy.jsonl");
    writeFileSync(policyFile, POLICY.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const nativeReport = join(scratch, "policy-report.json");
    await runNative(["head", "train", "--device", "cpu", "--model", join(served, CRITIQUE_MODEL_FILE), "--data", policyFile,
      "--cache", join(scratch, "policy-features"), "--out", join(scratch, "policy.head.safetensors"), "--report", nativeReport]);
    const want = JSON.parse(readFileSync(nativeReport, "utf8"));
    await cpuPage.fill("#model-url", `models/${encodeURIComponent(CRITIQUE_MODEL_FILE)}`);
    await cpuPage.click("#load");
    await waitForState(cpuPage, ["ready"], LOAD_TIMEOUT_MS, `loading ${CRITIQUE_MODEL_FILE} on the CPU`);
    await cpuPage.fill("#teach-examples", POLICY.map((e) => JSON.stringify({ ...e, dataset: "policy" })).join("\n"));
    const taughtAt = Date.now();
    await cpuPage.click("#teach-train");
    await waitForState(cpuPage, ["ready"], JUDGE_TIMEOUT_MS, "teaching a policy");
    const taught = await cpuPage.evaluate(() => ({
      status: document.getElementById("teach-status").textContent,
      rows: [...document.querySelectorAll("#teach-report tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)),
      model: document.getElementById("model-info").textContent,
    }));
    metric({ metric: "teach_policy_ms", dialogues: POLICY.length, ms: Date.now() - taughtAt });
    const wantRow = ["policy", String(want.heldout_head.policy.items), `${(100 * want.heldout_head.policy.accuracy).toFixed(1)}%`, `${(100 * want.heldout_model.policy.accuracy).toFixed(1)}%`];
    check(JSON.stringify(taught.rows) === JSON.stringify([wantRow]), `the page's held-out figures ${JSON.stringify(taught.rows)} equal the native head train's ${JSON.stringify(wantRow)}`);
    check(taught.status.includes(`layer ${want.layer}, C ${want.c}; ${want.train_items} dialogues trained on, ${want.heldout_items} held out`), `the page chose layer ${want.layer} and C ${want.c} as the native CLI did ("${taught.status}")`);
    check(/verdict head .* taught l\d+$/.test(taught.model), `the taught head decides the page's verdicts ("${taught.model}")`);
    await screenshot(cpuPage, "09-taught-policy");
  } finally {
    await context.close();
    server.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (error) {
  failures.push(error.message);
  console.log(`FAIL: ${error.message}`);
}
summary.failures = failures;
mkdirSync(ARTIFACTS, { recursive: true });
writeFileSync(join(ARTIFACTS, "e2e-summary.json"), JSON.stringify(summary, null, 2) + "\n");
if (failures.length > 0) {
  console.log(`e2e: ${failures.length} failure(s); artifacts in ${ARTIFACTS}`);
  process.exit(1);
}
console.log(`e2e: all checks passed; artifacts in ${ARTIFACTS}`);
