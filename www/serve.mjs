#!/usr/bin/env node
// Serves the web app (www/) and the model files on 127.0.0.1, with no npm
// dependencies: HTTP Range (206/416), HEAD, ETag/Last-Modified revalidation and
// the right MIME types. `/models/<file>` maps to the models folder
// (SAFETYJ_MODELS_DIR, else $SAFETYJ_CACHE/models, else ~/.cache/safetyj/models)
// and `/models/index.json` lists the .gguf files there.
//
//   node www/serve.mjs [--port 8080] [--models DIR] [--root DIR]
//
// `--port 0` picks a free port. The first line printed is
// `safetyj: serving http://127.0.0.1:<port>/` (tests read the port from it).

import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..");

/** MIME types by file extension; anything else is application/octet-stream. */
export const MIME_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".ts": "text/plain; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".gguf": "application/octet-stream",
};

/** The models folder the server uses when none is given. */
export function defaultModelsDir(env = process.env) {
  if (env.SAFETYJ_MODELS_DIR) return env.SAFETYJ_MODELS_DIR;
  const cache = env.SAFETYJ_CACHE || join(homedir(), ".cache", "safetyj");
  return join(cache, "models");
}

/**
 * Parses a `Range` header against a resource of `size` bytes. Returns
 * `{ start, end }` (inclusive) for one satisfiable range, `null` when the header
 * should be ignored (absent, or several ranges: the whole body is sent), or
 * `"unsatisfiable"` for a malformed or out-of-bounds range (answered with 416).
 */
export function parseRange(header, size) {
  if (header === undefined) return null;
  const match = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!match) return "unsatisfiable";
  const specs = match[1].split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (specs.length !== 1) return specs.length === 0 ? "unsatisfiable" : null;
  const spec = /^(\d*)-(\d*)$/.exec(specs[0]);
  if (!spec || (spec[1] === "" && spec[2] === "")) return "unsatisfiable";
  if (spec[1] === "") {
    const suffix = Number(spec[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(spec[1]);
  const end = spec[2] === "" ? size - 1 : Math.min(Number(spec[2]), size - 1);
  if (start >= size || (spec[2] !== "" && Number(spec[2]) < start)) return "unsatisfiable";
  return { start, end };
}

/** A strong validator built from a file's size and modification time. */
function etagOf(info) {
  return `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
}

/** Resolves `relative` under `root`, or returns null if it would leave `root`. */
function within(root, relative) {
  const full = resolve(root, "." + sep + relative);
  return full === root || full.startsWith(root + sep) ? full : null;
}

/** Presets by file name and the default preset's name, from models/presets.json (empty if absent). */
async function presetsByFile() {
  try {
    const presets = JSON.parse(await readFile(join(REPO, "models", "presets.json"), "utf8"));
    const byFile = new Map();
    for (const preset of presets.presets ?? []) {
      if (preset.source?.file) byFile.set(preset.source.file, preset);
    }
    return { byFile, defaultName: presets.default ?? null };
  } catch {
    return { byFile: new Map(), defaultName: null };
  }
}

/**
 * The body of /models/index.json: every .gguf file in `modelsDir` with its size,
 * its preset name (models/presets.json) if it is a preset's file, and whether that
 * preset is the default.
 */
export async function modelIndex(modelsDir) {
  let names = [];
  try {
    names = (await readdir(modelsDir)).filter((name) => name.endsWith(".gguf")).sort();
  } catch (error) {
    if (error.code !== "ENOENT") throw error;
  }
  const { byFile, defaultName } = await presetsByFile();
  const models = [];
  for (const file of names) {
    const info = await stat(join(modelsDir, file)).catch(() => null);
    if (!info?.isFile()) continue;
    const preset = byFile.get(file);
    models.push({
      file,
      url: `models/${encodeURIComponent(file)}`,
      bytes: info.size,
      preset: preset?.name ?? null,
      standIn: preset ? Boolean(preset.stand_in) : null,
      default: preset !== undefined && preset.name === defaultName,
    });
  }
  return { models };
}

function send(res, status, headers, body, head) {
  res.writeHead(status, headers);
  res.end(head ? undefined : body);
}

function sendText(res, status, text, head, extra = {}) {
  const body = Buffer.from(text + "\n");
  send(res, status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": body.length, ...extra }, body, head);
}

/** Sends one file, honouring conditional requests and a single byte range. */
async function sendFile(req, res, path, head, extraHeaders) {
  let info;
  try {
    info = await stat(path);
  } catch {
    return sendText(res, 404, "not found", head);
  }
  if (!info.isFile()) return sendText(res, 404, "not found", head);
  const etag = etagOf(info);
  const lastModified = new Date(Math.floor(info.mtimeMs / 1000) * 1000).toUTCString();
  const headers = {
    "Content-Type": MIME_TYPES[extname(path).toLowerCase()] ?? "application/octet-stream",
    "Accept-Ranges": "bytes",
    ETag: etag,
    "Last-Modified": lastModified,
    "Cache-Control": "no-cache",
    ...extraHeaders,
  };

  const ifNoneMatch = req.headers["if-none-match"];
  const ifModifiedSince = req.headers["if-modified-since"];
  const notModified = ifNoneMatch !== undefined
    ? ifNoneMatch.split(",").some((tag) => tag.trim() === etag || tag.trim() === "*")
    : ifModifiedSince !== undefined && Date.parse(ifModifiedSince) >= Date.parse(lastModified);
  if (notModified) return send(res, 304, headers, undefined, true);

  let range = parseRange(req.headers.range, info.size);
  const ifRange = req.headers["if-range"];
  if (range !== null && ifRange !== undefined && ifRange !== etag && ifRange !== lastModified) range = null;
  if (range === "unsatisfiable") {
    return sendText(res, 416, "range not satisfiable", head, { ...headers, "Content-Range": `bytes */${info.size}`, "Content-Type": "text/plain; charset=utf-8" });
  }
  const { start, end } = range ?? { start: 0, end: info.size - 1 };
  const length = info.size === 0 ? 0 : end - start + 1;
  headers["Content-Length"] = length;
  if (range) headers["Content-Range"] = `bytes ${start}-${end}/${info.size}`;
  res.writeHead(range ? 206 : 200, headers);
  if (head || length === 0) return res.end();
  const stream = createReadStream(path, { start, end });
  stream.on("error", () => res.destroy());
  res.on("close", () => stream.destroy());
  stream.pipe(res);
}

/** Builds the request handler for the app folder `root` and the models folder `modelsDir`. */
export function handler({ root, modelsDir }) {
  const appRoot = resolve(root);
  const modelsRoot = resolve(modelsDir);
  return async (req, res) => {
    try {
      const head = req.method === "HEAD";
      if (req.method !== "GET" && !head) {
        return sendText(res, 405, "method not allowed", false, { Allow: "GET, HEAD" });
      }
      let pathname;
      try {
        pathname = decodeURIComponent(new URL(req.url, "http://127.0.0.1").pathname);
      } catch {
        return sendText(res, 400, "bad request path", head);
      }
      if (pathname.includes("\0") || pathname.split(/[\\/]/).includes("..")) {
        return sendText(res, 403, "forbidden path", head);
      }
      // The models folder is readable from any origin (other pages may stream from it).
      const modelHeaders = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "Accept-Ranges, Content-Length, Content-Range, ETag, Last-Modified",
      };
      if (pathname === "/models/index.json") {
        const body = Buffer.from(JSON.stringify(await modelIndex(modelsRoot)));
        return send(res, 200, { "Content-Type": MIME_TYPES[".json"], "Content-Length": body.length, "Cache-Control": "no-store", ...modelHeaders }, body, head);
      }
      if (pathname.startsWith("/models/")) {
        const name = pathname.slice("/models/".length);
        if (name === "" || /[\\/]/.test(name) || name.startsWith(".")) return sendText(res, 404, "not found", head);
        const file = within(modelsRoot, name);
        return file ? sendFile(req, res, file, head, modelHeaders) : sendText(res, 403, "forbidden path", head);
      }
      const relative = pathname.endsWith("/") ? pathname + "index.html" : pathname;
      // Hidden files and the build tools' node_modules are not part of the app.
      if (relative.split("/").some((part) => (part.startsWith(".") && part !== "") || part === "node_modules")) {
        return sendText(res, 404, "not found", head);
      }
      const file = within(appRoot, relative.slice(1));
      return file ? sendFile(req, res, file, head, {}) : sendText(res, 403, "forbidden path", head);
    } catch (error) {
      if (!res.headersSent) sendText(res, 500, `server error: ${error.message}`, false);
      else res.destroy();
    }
  };
}

/** Starts the server on 127.0.0.1:`port`; resolves to the listening http.Server. */
export function serve({ port = 8080, root = HERE, modelsDir = defaultModelsDir() } = {}) {
  const server = createServer(handler({ root, modelsDir }));
  return new Promise((resolvePromise, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolvePromise(server));
  });
}

function parseArgs(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === "--help" || flag === "-h") {
      console.log("usage: node www/serve.mjs [--port 8080] [--models DIR] [--root DIR]");
      process.exit(0);
    }
    if (!["--port", "--models", "--root"].includes(flag) || value === undefined) {
      throw new Error(`unknown or incomplete argument: ${flag} (see --help)`);
    }
    i++;
    if (flag === "--port") {
      if (!/^\d+$/.test(value) || Number(value) > 65535) throw new Error(`--port needs a number 0-65535, got ${value}`);
      options.port = Number(value);
    } else if (flag === "--models") {
      options.modelsDir = value;
    } else {
      options.root = value;
    }
  }
  return options;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const options = parseArgs(process.argv.slice(2));
    const server = await serve(options);
    const { port } = server.address();
    console.log(`safetyj: serving http://127.0.0.1:${port}/`);
    console.log(`safetyj: app from ${resolve(options.root ?? HERE)}, models from ${resolve(options.modelsDir ?? defaultModelsDir())}`);
  } catch (error) {
    console.error(`safetyj serve: ${error.message}`);
    process.exit(1);
  }
}
