// Type-checked (never run) by .ci/e2e.sh: uses of the JS API as an application writes
// them, against the wasm Judge's generated declarations (www/pkg/safetyj.d.ts) and the
// worker client's (www/judge-client.d.ts). A field renamed on one side and not the
// other fails the check.

import init, { Judge } from "../../www/pkg/safetyj.js";
import { WorkerJudge } from "../../www/judge-client.js";
import type { JudgeError, LoadOptions, Verdict } from "../../www/judge-client.js";

function describe(verdict: Verdict): string {
  const critique: string = verdict.critique ?? "";
  return `${verdict.label} ${verdict.p_unsafe.toFixed(3)} ${verdict.time_to_verdict_ms} ms ${critique}`;
}

export async function inPage(): Promise<string> {
  await init();
  const judge = await Judge.load("qwen2.5-coder-0.5b", {
    modelBaseUrl: "/models/",
    onProgress: (p) => console.log(p.phase, p.bytesDone, p.bytesTotal, p.cacheError),
    threshold: 0.5,
  });
  const caps = judge.capabilities();
  const info = judge.modelInfo();
  console.log(caps.adapter, caps.shaderF16, info.quant, info.standIn);
  const verdict = await judge.evaluate({
    query: "q",
    response: "r",
    lang: "zh",
    mode: "critique",
    onCritique: (piece) => piece.length < 100,
  });
  const trained = await judge.trainHead(
    [{ query: "q", response: "r", label: "unsafe", dataset: "forum rules", lang: "en" }],
    { holdout: 0.3, layer: 12, seed: 1, name: "forum", onProgress: (done, total) => console.log(done, total) },
  );
  const accuracy: number = trained.report.heldout_mean_accuracy_head;
  const perSet: number = trained.report.heldout_head["forum rules"].accuracy;
  const name: string | null = await judge.useHead(trained.file);
  console.log(accuracy, perSet, name, await judge.useHead(null));
  judge.dispose();
  return describe(verdict);
}

export async function inWorker(): Promise<string> {
  const options: LoadOptions = { workerUrl: new URL("./worker.js", "https://example.com/"), cache: false };
  const judge = await WorkerJudge.load("/models/tiny.gguf", options);
  try {
    const { file, report } = await judge.trainHead([{ query: "q", response: "r", label: "safe" }], { onProgress: (done: number) => done });
    await judge.useHead(file);
    console.log(report.layer, report.c, judge.modelInfo().head);
    return describe(await judge.evaluate({ query: "q", response: "r" }));
  } catch (error) {
    return (error as JudgeError).deviceLost ? "reload" : String(error);
  } finally {
    judge.dispose();
  }
}
