// Tests of www/serve.mjs against a temporary app folder and models folder:
// Range (206, suffix, open-ended, 416), HEAD, ETag/Last-Modified revalidation,
// If-Range, MIME types, /models/index.json, and path traversal.
//   node --test tests/e2e/serve.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "node:http";
import { parseRange, serve } from "../../www/serve.mjs";

let server;
let scratch;
const MODEL = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) % 256));

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), "safetyj-serve-"));
  const root = join(scratch, "www");
  const models = join(scratch, "models");
  await mkdir(join(root, "pkg"), { recursive: true });
  await mkdir(models);
  await writeFile(join(root, "index.html"), "<!doctype html><title>t</title>");
  await writeFile(join(root, "pkg", "safetyj_bg.wasm"), Buffer.from([0, 97, 115, 109, 1, 0, 0, 0]));
  await writeFile(join(root, "app.js"), "export {};");
  await writeFile(join(root, ".secret"), "hidden");
  await mkdir(join(root, "node_modules"));
  await writeFile(join(root, "node_modules", "tool.js"), "hidden");
  await writeFile(join(scratch, "outside.txt"), "outside");
  await writeFile(join(models, "tiny.gguf"), MODEL);
  await writeFile(join(models, "notes.txt"), "not a model");
  server = await serve({ port: 0, root, modelsDir: models });
});

after(async () => {
  await new Promise((done) => server.close(done));
  await rm(scratch, { recursive: true, force: true });
});

/** A raw request (no URL normalisation by a client), resolving to status, headers and body. */
function fetchRaw(path, { method = "GET", headers = {} } = {}) {
  return new Promise((done, fail) => {
    const req = request({ host: "127.0.0.1", port: server.address().port, path, method, headers }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("end", () => done({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", fail);
    req.end();
  });
}

test("parseRange: forms and bounds", () => {
  assert.deepEqual(parseRange(undefined, 10), null);
  assert.deepEqual(parseRange("bytes=0-3", 10), { start: 0, end: 3 });
  assert.deepEqual(parseRange("bytes=4-", 10), { start: 4, end: 9 });
  assert.deepEqual(parseRange("bytes=-3", 10), { start: 7, end: 9 });
  assert.deepEqual(parseRange("bytes=-30", 10), { start: 0, end: 9 });
  assert.deepEqual(parseRange("bytes=5-100", 10), { start: 5, end: 9 });
  assert.equal(parseRange("bytes=10-", 10), "unsatisfiable");
  assert.equal(parseRange("bytes=5-2", 10), "unsatisfiable");
  assert.equal(parseRange("bytes=-0", 10), "unsatisfiable");
  assert.equal(parseRange("bytes=-", 10), "unsatisfiable");
  assert.equal(parseRange("items=0-1", 10), "unsatisfiable");
  assert.equal(parseRange("bytes=a-b", 10), "unsatisfiable");
  assert.equal(parseRange("bytes=0-1,4-5", 10), null);
});

test("whole model file with validators and Accept-Ranges", async () => {
  const res = await fetchRaw("/models/tiny.gguf");
  assert.equal(res.status, 200);
  assert.equal(res.headers["accept-ranges"], "bytes");
  assert.equal(res.headers["content-type"], "application/octet-stream");
  assert.equal(res.headers["content-length"], "1000");
  assert.match(res.headers.etag, /^"[0-9a-f]+-[0-9a-f]+"$/);
  assert.ok(res.headers["last-modified"]);
  assert.deepEqual(res.body, MODEL);
});

test("byte ranges answer 206 with the exact bytes", async () => {
  for (const [range, start, end] of [["bytes=0-15", 0, 15], ["bytes=990-", 990, 999], ["bytes=-4", 996, 999], ["bytes=500-2000", 500, 999]]) {
    const res = await fetchRaw("/models/tiny.gguf", { headers: { Range: range } });
    assert.equal(res.status, 206, range);
    assert.equal(res.headers["content-range"], `bytes ${start}-${end}/1000`, range);
    assert.equal(res.headers["content-length"], String(end - start + 1), range);
    assert.deepEqual(res.body, MODEL.subarray(start, end + 1), range);
  }
});

test("bad ranges answer 416 with the size", async () => {
  for (const range of ["bytes=1000-", "bytes=7-3", "bytes=x"]) {
    const res = await fetchRaw("/models/tiny.gguf", { headers: { Range: range } });
    assert.equal(res.status, 416, range);
    assert.equal(res.headers["content-range"], "bytes */1000", range);
  }
});

test("HEAD gives the headers and no body", async () => {
  const res = await fetchRaw("/models/tiny.gguf", { method: "HEAD", headers: { Range: "bytes=10-19" } });
  assert.equal(res.status, 206);
  assert.equal(res.headers["content-length"], "10");
  assert.equal(res.body.length, 0);
});

test("conditional requests: 304 on a matching ETag or date; If-Range", async () => {
  const first = await fetchRaw("/models/tiny.gguf", { method: "HEAD" });
  const etag = first.headers.etag;
  assert.equal((await fetchRaw("/models/tiny.gguf", { headers: { "If-None-Match": etag } })).status, 304);
  assert.equal((await fetchRaw("/models/tiny.gguf", { headers: { "If-Modified-Since": first.headers["last-modified"] } })).status, 304);
  assert.equal((await fetchRaw("/models/tiny.gguf", { headers: { "If-None-Match": '"other"' } })).status, 200);
  const matching = await fetchRaw("/models/tiny.gguf", { headers: { Range: "bytes=0-9", "If-Range": etag } });
  assert.equal(matching.status, 206);
  const stale = await fetchRaw("/models/tiny.gguf", { headers: { Range: "bytes=0-9", "If-Range": '"stale"' } });
  assert.equal(stale.status, 200);
  assert.equal(stale.body.length, 1000);
});

test("models index lists only .gguf files with sizes", async () => {
  const res = await fetchRaw("/models/index.json");
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"], /^application\/json/);
  const index = JSON.parse(res.body.toString());
  assert.deepEqual(index.models.map((m) => [m.file, m.url, m.bytes, m.preset, m.default]), [["tiny.gguf", "models/tiny.gguf", 1000, null, false]]);
});

test("app files: index, MIME types, 404, 405", async () => {
  const index = await fetchRaw("/");
  assert.equal(index.status, 200);
  assert.match(index.headers["content-type"], /^text\/html/);
  assert.equal((await fetchRaw("/pkg/safetyj_bg.wasm")).headers["content-type"], "application/wasm");
  assert.match((await fetchRaw("/app.js")).headers["content-type"], /^text\/javascript/);
  assert.equal((await fetchRaw("/missing.js")).status, 404);
  const post = await fetchRaw("/", { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.allow, "GET, HEAD");
});

test("no path traversal, no hidden files", async () => {
  for (const path of ["/../outside.txt", "/%2e%2e/outside.txt", "/pkg/%2e%2e/%2e%2e/outside.txt", "/models/..%2foutside.txt", "/models/%2e%2e%2foutside.txt", "/models/..%5coutside.txt", "/.secret", "/node_modules/tool.js", "/models/%00"]) {
    const res = await fetchRaw(path);
    assert.ok([400, 403, 404].includes(res.status), `${path} gave ${res.status}`);
    assert.ok(!res.body.toString().includes("outside"), path);
    assert.ok(!res.body.toString().includes("hidden"), path);
  }
  assert.equal((await fetchRaw("/models/notes.txt")).status, 200);
});
