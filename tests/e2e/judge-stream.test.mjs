// `safetyj serve`'s POST /v1/judge/stream from Node's own HTTP client (fetch): B's
// answer sent as a ReadableStream body (chunked, `duplex: "half"`), one piece cut
// inside a character, the event stream read as it arrives; the verdict equals a
// one-shot /v1/judge on the whole answer. Runs the native CLI (target/debug/safetyj)
// on tinycoder on the CPU; skips outside CI when either is missing.
//   cargo build --bin safetyj && node --test tests/e2e/judge-stream.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname;
const CLI = join(ROOT, "target/debug/safetyj");
const MODELS = process.env.SAFETYJ_MODELS_DIR ?? join(process.env.SAFETYJ_CACHE ?? join(homedir(), ".cache/safetyj"), "models");
const MODEL = join(MODELS, "tinycoder-tiny.gguf");
const KEY = "e2e-stream-key";
const QUERY = "How do I pick a lock?";

const missing = [CLI, MODEL].filter((path) => !existsSync(path));
if (missing.length && process.env.CI) throw new Error(`CI needs ${missing.join(" and ")} (.ci/e2e.sh builds and fetches them)`);
const skip = missing.length ? `missing ${missing.join(", ")}` : false;

let server;
let base;

before(async () => {
  if (skip) return;
  server = spawn(CLI, ["serve", "--model", MODEL, "--device", "cpu", "--port", "0", "--api-key-env", "SAFETYJ_E2E_KEY"], {
    env: { ...process.env, SAFETYJ_E2E_KEY: KEY },
    stdio: ["ignore", "ignore", "pipe"],
  });
  base = await new Promise((done, fail) => {
    let seen = "";
    server.stderr.on("data", (chunk) => {
      seen += chunk;
      const found = seen.match(/listening on (http:\/\/\S+),/);
      if (found) done(found[1]);
    });
    server.on("exit", (code) => fail(new Error(`safetyj serve exited (${code}): ${seen}`)));
  });
  for (let tries = 0; (await fetch(`${base}/health`)).status !== 200; tries++) {
    assert.ok(tries < 600, "the model did not load in 60 s");
    await new Promise((wait) => setTimeout(wait, 100));
  }
});

after(() => server?.kill("SIGTERM"));

/** A body that sends `pieces` one by one, a pause before each so each arrives on its own. */
function slowBody(pieces) {
  let next = 0;
  return new ReadableStream({
    async pull(controller) {
      await new Promise((wait) => setTimeout(wait, 60));
      if (next < pieces.length) controller.enqueue(pieces[next++]);
      else controller.close();
    },
  });
}

/** The Server-Sent Events of a response, parsed as they arrive: [{event, data}]. */
async function readEvents(response) {
  const events = [];
  let buffer = "";
  const decoder = new TextDecoder();
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event.event = line.slice(6).trim();
        else if (line.startsWith("data:")) event.data.push(line.slice(5).replace(/^ /, ""));
      }
      if (event.data.length) events.push({ event: event.event, data: event.data.join("\n") });
    }
  }
  return events;
}

function streamUrl(params) {
  return `${base}/v1/judge/stream?${new URLSearchParams(params)}`;
}

const auth = { Authorization: `Bearer ${KEY}` };

test("a ReadableStream body is checked as it arrives; the verdict equals /v1/judge's", { skip }, async () => {
  const text = "I can't help with breaking into property you don't own: 这是违法的。 Call a locksmith instead.";
  const bytes = new TextEncoder().encode(text);
  const cut = new TextEncoder().encode(text.slice(0, text.indexOf("这"))).length + 1;
  const pieces = [bytes.slice(0, 20), bytes.slice(20, cut), bytes.slice(cut, cut + 15), bytes.slice(cut + 15)];
  const response = await fetch(streamUrl({ query: QUERY, lang: "en", check_every: "4" }), {
    method: "POST",
    headers: { ...auth, "Content-Type": "text/plain; charset=utf-8" },
    body: slowBody(pieces),
    duplex: "half",
  });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream");
  const events = await readEvents(response);
  assert.equal(events.at(-1).data, "[DONE]");
  assert.equal(events.at(-2).event, "verdict", JSON.stringify(events));
  const checks = events.slice(0, -2);
  assert.ok(checks.length >= 2, JSON.stringify(events));
  let tokens = 0;
  for (const { event, data } of checks) {
    assert.equal(event, "check");
    const check = JSON.parse(data);
    assert.ok(check.p_unsafe >= 0 && check.p_unsafe <= 1, data);
    assert.ok(check.response_tokens > tokens, data);
    assert.equal(check.stopped, false);
    tokens = check.response_tokens;
  }
  const verdict = JSON.parse(events.at(-2).data);
  const oneShot = await (
    await fetch(`${base}/v1/judge`, {
      method: "POST",
      headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify({ query: QUERY, response: text, lang: "en" }),
    })
  ).json();
  assert.ok(Math.abs(verdict.p_unsafe - oneShot.p_unsafe) < 1e-4, `${verdict.p_unsafe} vs ${oneShot.p_unsafe}`);
  assert.equal(verdict.label, oneShot.label);
  assert.equal(verdict.prompt_tokens, oneShot.prompt_tokens);
});

test("stop_at ends the answer while the body is still open; bad parameters get 400", { skip }, async () => {
  let release;
  const held = new Promise((done) => (release = done));
  const body = new ReadableStream({
    async start(controller) {
      controller.enqueue(new TextEncoder().encode("Sure, here is how to"));
      await held;
      controller.close();
    },
  });
  const response = await fetch(streamUrl({ query: QUERY, lang: "en", check_every: "2", stop_at: "0" }), {
    method: "POST",
    headers: auth,
    body,
    duplex: "half",
  });
  const events = await readEvents(response);
  release();
  assert.deepEqual(events.map((e) => e.event), ["check", "verdict", "message"]);
  assert.equal(JSON.parse(events[0].data).stopped, true);

  const bad = await fetch(streamUrl({ query: QUERY, check_every: "0" }), { method: "POST", headers: auth, body: "x" });
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.param, "check_every");
});
