// Types of ./judge-client.js: the wasm Judge's API, run in a Web Worker. The shared
// types come from ./pkg/safetyj.d.ts, which www/build.sh generates from src/web/mod.rs.

import type {
  Capabilities,
  EvaluateRequest,
  LoadOptions as EngineLoadOptions,
  LoadProgress,
  ModelInfo,
  ModerateStreamRequest,
  StreamCheck,
  HeadExample,
  TrainHeadOptions,
  TrainedHead,
  TrainReport,
  Verdict,
} from "./pkg/safetyj.js";

export type {
  HeadExample,
  TrainHeadOptions,
  TrainedHead,
  TrainReport,
  Capabilities,
  EvaluateRequest,
  LoadProgress,
  ModelInfo,
  ModerateStreamRequest,
  StreamCheck,
  Verdict,
};

/** Options of WorkerJudge.load: the wasm Judge's LoadOptions plus `workerUrl`. */
export interface LoadOptions extends EngineLoadOptions {
  /** The worker script; default ./worker.js next to judge-client.js. */
  workerUrl?: string | URL;
}

/** An error from the judge; `deviceLost` means the GPU is gone and the page should reload. */
export interface JudgeError extends Error {
  deviceLost: boolean;
}

/** A response being moderated as it is written (`WorkerJudge.moderateStream`). */
export interface ModerationStream {
  /** Appends text (cut anywhere); resolves to the check it ran, or null. Rejects once stopped at `stopAt`. */
  push(text: string): Promise<StreamCheck | null>;
  /** The verdict on the whole response; ends the stream. */
  finish(): Promise<Verdict>;
  /** Ends the stream without a verdict and frees its KV cache. */
  close(): void;
}

/** A safety judge running in its own Web Worker. */
export declare class WorkerJudge {
  private constructor();
  /** Starts a worker and loads a model (a .gguf URL or a preset name) in it. */
  static load(source: string, options?: LoadOptions): Promise<WorkerJudge>;
  /** Judges one dialogue; rejects with a JudgeError. */
  evaluate(request: EvaluateRequest): Promise<Verdict>;
  /** Starts moderating B's response to `request.query` while it is written. */
  moderateStream(request: ModerateStreamRequest): Promise<ModerationStream>;
  /** Trains a verdict head for the loaded model from labelled dialogues, in the worker. */
  trainHead(examples: HeadExample[], options?: TrainHeadOptions): Promise<TrainedHead>;
  /** Decides verdicts with a head file (null: the model's own verdict); resolves to the head's name or null. */
  useHead(file: Uint8Array | null): Promise<string | null>;
  /** The adapter's name, backend, features and limits. */
  capabilities(): Capabilities;
  /** The loaded model's description. */
  modelInfo(): ModelInfo;
  /** Frees the GPU memory and ends the worker; later calls throw an Error whose message starts with "disposed:". */
  dispose(): void;
}
