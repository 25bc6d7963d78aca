// WorkerJudge: the wasm `Judge` API, run in a Web Worker (./worker.js) so the page
// never freezes. Same surface as the `Judge` of ./pkg/safetyj.js:
//
//   const judge = await WorkerJudge.load("models/x.gguf", { onProgress });
//   const verdict = await judge.evaluate({ query, response, mode: "critique", onCritique });
//   const stream = await judge.moderateStream({ query, checkEvery: 16, stopAt: 0.9, onCheck });
//   await stream.push(piece); …; const final = await stream.finish();
//   const { file, report } = await judge.trainHead(examples, { onProgress }); await judge.useHead(file);
//   judge.capabilities(); judge.modelInfo(); judge.dispose();
//
// Types: ./judge-client.d.ts. The protocol is described in ./worker.js.

/** Message of the error every call gives after dispose(), as the wasm Judge's. */
const DISPOSED = "disposed: this judge was disposed and its worker ended; call WorkerJudge.load again";

/** Rebuilds an Error from the worker's description, keeping `deviceLost`. */
function toError(description) {
  const error = new Error(description.message);
  if (description.name && description.name !== "Error") error.name = description.name;
  error.deviceLost = Boolean(description.deviceLost);
  return error;
}

/** Drops functions (callbacks) that cannot cross into the worker. */
function cloneable(object) {
  const copy = {};
  for (const [key, value] of Object.entries(object ?? {})) {
    if (typeof value !== "function") copy[key] = value;
  }
  return copy;
}

/** A safety judge running in its own Web Worker. */
export class WorkerJudge {
  #worker;
  #pending = new Map();
  #nextId = 1;
  #capabilities = null;
  #modelInfo = null;
  #disposed = false;

  /** Use WorkerJudge.load(). */
  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => this.#receive(data);
    worker.onerror = (event) => {
      event.preventDefault?.();
      this.#failAll(new Error(`the judge worker failed: ${event.message || "it could not start (is www/pkg built?)"}`));
    };
    worker.onmessageerror = () => this.#failAll(new Error("the judge worker sent a message that could not be read"));
  }

  /**
   * Starts a worker and loads a model in it. `source` is a .gguf URL (relative to
   * the page) or a preset name; `options` are the wasm Judge's LoadOptions, plus
   * `workerUrl` to place the worker script elsewhere.
   */
  static async load(source, options = {}) {
    const workerUrl = options.workerUrl ?? new URL("./worker.js", import.meta.url);
    const judge = new WorkerJudge(new Worker(workerUrl, { type: "module" }));
    const { workerUrl: _unused, onProgress, ...rest } = options;
    const settings = cloneable(rest);
    // Preset names resolve against the page, as with the wasm Judge on the page itself.
    settings.modelBaseUrl = new URL(settings.modelBaseUrl ?? "./models/", baseUrl()).href;
    try {
      const { capabilities, modelInfo } = await judge.#call(
        { type: "load", source: absoluteModelUrl(source), options: settings },
        { onProgress },
      );
      judge.#capabilities = capabilities;
      judge.#modelInfo = modelInfo;
      return judge;
    } catch (error) {
      judge.#terminate();
      throw error;
    }
  }

  /**
   * Judges one dialogue. `request.onCritique(text)` receives each critique piece
   * as it streams (critique mode); returning `false` stops the critique.
   */
  evaluate(request) {
    const { onCritique } = request ?? {};
    const stream = typeof onCritique === "function";
    return this.#call({ type: "evaluate", request: cloneable(request), stream }, { onCritique });
  }

  /**
   * Starts moderating B's response to `request.query` as it is written. Resolves to
   * `{push(text), finish(), close()}`: `push` resolves to the check it ran (every
   * `checkEvery` response tokens) or null, and passes it to `request.onCheck`;
   * `finish` resolves to the verdict on the whole response; `close` drops it.
   */
  async moderateStream(request) {
    const { onCheck } = request ?? {};
    const stream = await this.#call({ type: "streamOpen", request: cloneable(request) });
    return {
      push: async (text) => {
        const check = await this.#call({ type: "streamPush", stream, text: String(text) });
        if (check !== null) onCheck?.(check);
        return check;
      },
      finish: () => this.#call({ type: "streamFinish", stream }),
      close: () => {
        this.#call({ type: "streamClose", stream }).catch(() => {});
      },
    };
  }

  /**
   * Trains a verdict head for the loaded model from labelled dialogues
   * (`{query, response, label, dataset?, lang?}`): resolves to `{name, report, file}`.
   * `options.onProgress(done, total)` follows the feature passes.
   */
  trainHead(examples, options = {}) {
    const { onProgress, ...rest } = options ?? {};
    return this.#call(
      { type: "trainHead", examples, options: cloneable(rest) },
      { onProgress: (progress) => onProgress?.(progress.done, progress.total) },
    );
  }

  /** Decides verdicts with the head file `file` (null: the model's own verdict); resolves to its name or null. */
  async useHead(file) {
    const name = await this.#call({ type: "useHead", file: file ?? null });
    this.#modelInfo = { ...this.#modelInfo, head: name };
    return name;
  }

  /** The adapter's name, backend, features and limits (as read at load). */
  capabilities() {
    this.#checkAlive();
    return this.#capabilities;
  }

  /** The loaded model's name, architecture, sizes and quantization (as read at load), and the head deciding. */
  modelInfo() {
    this.#checkAlive();
    return this.#modelInfo;
  }

  /** Frees the model's GPU memory and ends the worker; later calls throw "disposed: …". */
  dispose() {
    if (this.#disposed) return;
    this.#worker.postMessage({ id: this.#nextId++, type: "dispose" });
    this.#terminate();
  }

  #checkAlive() {
    if (this.#disposed) throw new Error(DISPOSED);
  }

  #terminate() {
    this.#disposed = true;
    // Let the dispose message reach the worker before it is stopped.
    setTimeout(() => this.#worker.terminate(), 1000);
    this.#failAll(new Error(DISPOSED));
  }

  #call(message, callbacks) {
    if (this.#disposed) return Promise.reject(new Error(DISPOSED));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...callbacks });
      this.#worker.postMessage({ id, ...message });
    });
  }

  #receive(data) {
    const entry = this.#pending.get(data?.id);
    if (!entry) return;
    switch (data.type) {
      case "progress":
        entry.onProgress?.(data.progress);
        break;
      case "critique":
        if (entry.onCritique?.(data.text) === false) {
          this.#worker.postMessage({ id: data.id, type: "cancel" });
        }
        break;
      case "result":
        this.#pending.delete(data.id);
        entry.resolve(data.value);
        break;
      case "error":
        this.#pending.delete(data.id);
        entry.reject(toError(data.error));
        break;
    }
  }

  #failAll(error) {
    const entries = [...this.#pending.values()];
    this.#pending.clear();
    for (const entry of entries) entry.reject(error);
  }
}

/** Resolves a relative .gguf URL against the page (the worker's base differs); presets pass unchanged. */
function absoluteModelUrl(source) {
  if (typeof source !== "string") return source;
  const looksLikeUrl = /\.gguf([?#].*)?$/i.test(source) || /^[a-z][a-z0-9+.-]*:/i.test(source);
  return looksLikeUrl ? new URL(source, baseUrl()).href : source;
}

/** The URL relative addresses are resolved against: the page's (or the calling worker's). */
function baseUrl() {
  return globalThis.document?.baseURI ?? globalThis.location.href;
}
