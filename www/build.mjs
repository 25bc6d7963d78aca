#!/usr/bin/env node
// Builds the browser engine into www/pkg with the settings of wasm-pack.toml:
// `wasm-pack build` (target, out dir, profile, features), then binaryen's wasm-opt
// (from npm; installed into www/node_modules on first use). Prints the bundle
// sizes. Run from anywhere: `bash www/build.sh` or `node www/build.mjs`.

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, renameSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const WWW = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(WWW, "..");

/**
 * Reads the subset of TOML that wasm-pack.toml uses: [tables], comments, and
 * `key = value` with strings, booleans, integers and (multi-line) string arrays.
 */
export function parseToml(text) {
  const root = {};
  let table = root;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = stripComment(lines[i]).trim();
    if (line === "") continue;
    const header = /^\[([A-Za-z0-9_.-]+)\]$/.exec(line);
    if (header) {
      table = root;
      for (const part of header[1].split(".")) table = table[part] ??= {};
      continue;
    }
    const pair = /^([A-Za-z0-9_-]+)\s*=\s*(.*)$/.exec(line);
    if (!pair) throw new Error(`wasm-pack.toml line ${i + 1}: cannot read "${lines[i]}"`);
    let value = pair[2];
    while (value.startsWith("[") && !value.trimEnd().endsWith("]")) {
      if (++i >= lines.length) throw new Error(`wasm-pack.toml: unclosed array for ${pair[1]}`);
      value += " " + stripComment(lines[i]).trim();
    }
    table[pair[1]] = parseValue(value.trim(), i + 1);
  }
  return root;
}

function stripComment(line) {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '"' && line[i - 1] !== "\\") quoted = !quoted;
    if (line[i] === "#" && !quoted) return line.slice(0, i);
  }
  return line;
}

function parseValue(value, lineNumber) {
  if (value === "true" || value === "false") return value === "true";
  if (/^-?\d+$/.test(value)) return Number(value);
  if (/^"(?:[^"\\]|\\.)*"$/.test(value)) return JSON.parse(value);
  if (value.startsWith("[") && value.endsWith("]")) {
    const items = value.slice(1, -1).split(",").map((item) => item.trim()).filter((item) => item !== "");
    return items.map((item) => parseValue(item, lineNumber));
  }
  throw new Error(`wasm-pack.toml line ${lineNumber}: unsupported value ${value}`);
}

/** Runs a command in the repository root, failing the build when it fails. */
function run(command, args, options = {}) {
  console.log(`$ ${command} ${args.join(" ")}`);
  const result = spawnSync(command, args, { cwd: REPO, stdio: "inherit", ...options });
  if (result.error) throw new Error(`${command}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${command} exited with status ${result.status}`);
}

function output(command, args) {
  const result = spawnSync(command, args, { cwd: REPO, encoding: "utf8" });
  return result.status === 0 ? result.stdout.trim() : null;
}

/** The wasm-bindgen version in Cargo.lock, which wasm-pack needs on PATH (it cannot download here). */
function lockedWasmBindgen() {
  const lock = readFileSync(join(REPO, "Cargo.lock"), "utf8");
  return /\[\[package\]\]\nname = "wasm-bindgen"\nversion = "([^"]+)"/.exec(lock)?.[1] ?? null;
}

function checkTools() {
  if (output("wasm-pack", ["--version"]) === null) {
    throw new Error("wasm-pack is not installed: `cargo install wasm-pack --locked` (or run .ci/e2e.sh)");
  }
  const wanted = lockedWasmBindgen();
  const installed = output("wasm-bindgen", ["--version"])?.split(" ")[1] ?? null;
  if (wanted !== null && installed !== wanted) {
    throw new Error(`wasm-bindgen ${wanted} (Cargo.lock) is needed on PATH, found ${installed ?? "none"}: \`cargo install wasm-bindgen-cli --version ${wanted}\``);
  }
}

function wasmOptBinary() {
  const binary = join(WWW, "node_modules", ".bin", "wasm-opt");
  if (!existsSync(binary)) run("npm", ["ci", "--no-audit", "--no-fund", "--prefix", WWW]);
  return binary;
}

/** Raw and gzip sizes of the built .wasm and .js, one JSON line each. */
export function bundleSizes(outDir, outName) {
  return [`${outName}_bg.wasm`, `${outName}.js`].map((file) => {
    const bytes = readFileSync(join(outDir, file));
    return { metric: "bundle_bytes", file, raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  });
}

function build() {
  const config = parseToml(readFileSync(join(REPO, "wasm-pack.toml"), "utf8"));
  const settings = config.build ?? {};
  const target = settings.target ?? "web";
  const outDir = settings.out_dir ?? "www/pkg";
  const outName = settings.out_name ?? "safetyj";
  const profile = settings.profile ?? "release";
  if (!["release", "profiling", "dev"].includes(profile)) {
    throw new Error(`wasm-pack.toml: profile must be release, profiling or dev, not ${profile}`);
  }
  checkTools();

  const args = ["build", "--target", target, "--out-dir", outDir, "--out-name", outName, `--${profile}`, "--no-opt", "--no-pack", "."];
  const cargoArgs = [];
  if (settings.no_default_features) cargoArgs.push("--no-default-features");
  if ((settings.features ?? []).length > 0) cargoArgs.push("--features", settings.features.join(","));
  const started = Date.now();
  run("wasm-pack", cargoArgs.length > 0 ? [...args, "--", ...cargoArgs] : args);
  const wasmPackSeconds = (Date.now() - started) / 1000;

  const absoluteOut = resolve(REPO, outDir);
  const wasm = join(absoluteOut, `${outName}_bg.wasm`);
  const optimiser = config.wasm_opt ?? {};
  let wasmOptSeconds = 0;
  if (optimiser.enabled) {
    const before = statSync(wasm).size;
    const optimised = `${wasm}.opt`;
    const optStarted = Date.now();
    run(wasmOptBinary(), [...(optimiser.flags ?? []), wasm, "-o", optimised]);
    renameSync(optimised, wasm);
    wasmOptSeconds = (Date.now() - optStarted) / 1000;
    console.log(`wasm-opt: ${before} -> ${statSync(wasm).size} bytes`);
  }
  console.log(JSON.stringify({ metric: "build_seconds", wasm_pack: wasmPackSeconds, wasm_opt: wasmOptSeconds }));
  for (const line of bundleSizes(absoluteOut, outName)) console.log(JSON.stringify(line));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    build();
  } catch (error) {
    console.error(`www/build: ${error.message}`);
    process.exit(1);
  }
}
