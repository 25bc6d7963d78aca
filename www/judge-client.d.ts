// Types of ./judge-client.js: the wasm Judge's API (./pkg/safetyj.d.ts), run in a Web Worker.

/** Where a load stands; `bytesFromCache` counts bytes served by the Cache Storage copy. */
export interface LoadProgress {
  phase: "header" | "weights" | "ready";
  bytesDone: number;
  bytesTotal: number;
  bytesFromCache: number;
  tensorsDone: number;
  tensorsTotal: number;
  /** Set when caching failed (e.g. quota); the load goes on without the cache. */
  cacheError?: string;
  message: string;
}

/** Options of WorkerJudge.load: the wasm Judge's LoadOptions plus `workerUrl`. */
export interface LoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Where preset names resolve: `${modelBaseUrl}${preset file}`; default "./models/" (relative to the page). */
  modelBaseUrl?: string;
  /** Keep fetched weights in Cache Storage; default true. */
  cache?: boolean;
  /** P(unsafe) at or above which the verdict is unsafe; default 0.5. */
  threshold?: number;
  /** KV cache positions; default 2048. */
  context?: number;
  /** Most tokens of a critique; default 256. */
  maxCritiqueTokens?: number;
  /** Parallel range requests; default 4. */
  inFlight?: number;
  /** The worker script; default ./worker.js next to judge-client.js. */
  workerUrl?: string | URL;
}

/** One dialogue to judge: A's query and B's response. */
export interface EvaluateRequest {
  query: string;
  response: string;
  lang?: "en" | "zh" | "auto";
  mode?: "verdict" | "critique";
  /** Receives each critique piece as it streams; returning false stops the critique. */
  onCritique?: (text: string) => boolean | void;
}

/** The verdict: the same fields as `safetyj judge --json`. */
export interface Verdict {
  label: "safe" | "unsafe";
  p_unsafe: number;
  threshold: number;
  lang: "en" | "zh";
  mode: "verdict" | "critique";
  output: string;
  critique: string | null;
  critique_stop: "stop_token" | "stop_string" | "max_tokens" | "cancelled" | "context_full" | null;
  prompt_tokens: number;
  cached_tokens: number;
  time_to_verdict_ms: number;
  total_ms: number;
}

/** The GPU adapter the judge runs on. */
export interface Capabilities {
  adapter: string;
  backend: string;
  shaderF16: boolean;
  subgroups: boolean;
  timestamps: boolean;
  maxStorageBindingBytes: number;
  maxBufferBytes: number;
}

/** The loaded model. `standIn` is true for a model that is not Safety-J, null when unknown. */
export interface ModelInfo {
  name: string;
  arch: string;
  layers: number;
  hidden: number;
  vocab: number;
  context: number;
  quant: string;
  fileBytes: number;
  standIn: boolean | null;
}

/** An error from the judge; `deviceLost` means the GPU is gone and the page should reload. */
export interface JudgeError extends Error {
  deviceLost: boolean;
}

/** A safety judge running in its own Web Worker. */
export declare class WorkerJudge {
  private constructor();
  /** Starts a worker and loads a model (a .gguf URL or a preset name) in it. */
  static load(source: string, options?: LoadOptions): Promise<WorkerJudge>;
  /** Judges one dialogue; rejects with a JudgeError. */
  evaluate(request: EvaluateRequest): Promise<Verdict>;
  /** The adapter's name, backend, features and limits. */
  capabilities(): Capabilities;
  /** The loaded model's description. */
  modelInfo(): ModelInfo;
  /** Frees the GPU memory and ends the worker; later calls throw an Error whose message starts with "disposed:". */
  dispose(): void;
}
