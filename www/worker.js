// The judge's Web Worker: holds one wasm `Judge` (./pkg/safetyj.js, built by
// www/build.sh) so pages never block on model loading or GPU readback.
//
// Protocol (every request carries an `id`; every reply repeats it):
//   page → worker  {id, type: "load", source, options}        options: LoadOptions without onProgress
//                  {id, type: "evaluate", request, stream}    request: EvaluateRequest without onCritique
//                  {id, type: "cancel"}                       stop the critique of evaluate `id`
//                  {id, type: "streamOpen", request}          request: ModerateStreamRequest without onCheck
//                  {id, type: "streamPush", stream, text}     stream: the id of its streamOpen
//                  {id, type: "streamFinish", stream} | {id, type: "streamClose", stream}
//                  {id, type: "trainHead", examples, options}  options: TrainHeadOptions without onProgress
//                  {id, type: "useHead", file}                file: a head file (Uint8Array) or null
//                  {id, type: "capabilities"} | {id, type: "modelInfo"} | {id, type: "dispose"}
//   worker → page  {id, type: "progress", progress}           LoadProgress during load; {done, total} during trainHead
//                  {id, type: "critique", text}               each critique piece, in order
//                  {id, type: "result", value}                load: {capabilities, modelInfo}; evaluate: Verdict;
//                                                             streamOpen: the stream's id; streamPush: StreamCheck | null;
//                                                             streamFinish: Verdict; streamClose: null;
//                                                             trainHead: TrainedHead; useHead: the head's name or null
//                  {id, type: "error", error: {name, message, deviceLost}}

/** The wasm module, initialised once on the first request. */
let modulePromise = null;
/** The loaded judge, or null before load and after dispose. */
let judge = null;
/** Ids of evaluations queued or in progress, and those of them whose critique the page asked to stop. */
const running = new Set();
const cancelled = new Set();
/** Open moderation streams (wasm ModerationStream) by the id of their streamOpen. */
const streams = new Map();
/** Requests run one at a time, in arrival order (the judge is not reentrant). */
let queue = Promise.resolve();

/** Imports and initialises ./pkg/safetyj.js, with a clear error when the build is missing. */
function engine() {
  modulePromise ??= (async () => {
    let module;
    try {
      module = await import("./pkg/safetyj.js");
    } catch (error) {
      throw new Error(`the web build is missing or broken (www/pkg/safetyj.js: ${error.message}); run \`bash www/build.sh\``);
    }
    await module.default();
    if (typeof module.Judge?.load !== "function") {
      throw new Error("www/pkg/safetyj.js has no Judge.load: the crate was built without the web JS API");
    }
    return module;
  })();
  return modulePromise;
}

function requireJudge() {
  if (judge === null) throw new Error("no model is loaded in this worker (load one first, or it was disposed)");
  return judge;
}

function requireStream(id) {
  const stream = streams.get(id);
  if (stream === undefined) throw new Error("this stream was finished or closed: start another with judge.moderateStream");
  return stream;
}

/** A structured-clone-safe form of an error; `deviceLost` tells the page to offer a reload. */
function describe(error) {
  const message = error instanceof Error ? error.message : String(error);
  return {
    name: error instanceof Error ? error.name : "Error",
    message,
    deviceLost: /device (was )?lost|lost the (gpu )?device|reload the page/i.test(message),
  };
}

async function handle(message) {
  const { id, type } = message;
  switch (type) {
    case "load": {
      const { Judge } = await engine();
      if (judge !== null) {
        judge.dispose();
        judge = null;
      }
      const options = {
        ...message.options,
        onProgress: (progress) => postMessage({ id, type: "progress", progress }),
      };
      judge = await Judge.load(message.source, options);
      return { capabilities: judge.capabilities(), modelInfo: judge.modelInfo() };
    }
    case "evaluate": {
      try {
        const current = requireJudge();
        const request = { ...message.request };
        if (message.stream) {
          request.onCritique = (text) => {
            if (cancelled.has(id)) return false;
            postMessage({ id, type: "critique", text });
            return true;
          };
        }
        return await current.evaluate(request);
      } finally {
        running.delete(id);
        cancelled.delete(id);
      }
    }
    case "streamOpen":
      streams.set(id, await requireJudge().moderateStream(message.request));
      return id;
    case "streamPush":
      return await requireStream(message.stream).push(message.text);
    case "streamFinish": {
      const stream = requireStream(message.stream);
      streams.delete(message.stream);
      return await stream.finish();
    }
    case "streamClose":
      streams.get(message.stream)?.close();
      streams.delete(message.stream);
      return null;
    case "trainHead": {
      const options = {
        ...message.options,
        onProgress: (done, total) => postMessage({ id, type: "progress", progress: { done, total } }),
      };
      return await requireJudge().trainHead(message.examples, options);
    }
    case "useHead":
      return await requireJudge().useHead(message.file ?? null);
    case "capabilities":
      return requireJudge().capabilities();
    case "modelInfo":
      return requireJudge().modelInfo();
    case "dispose":
      for (const stream of streams.values()) stream.close();
      streams.clear();
      if (judge !== null) {
        judge.dispose();
        judge = null;
      }
      return null;
    default:
      throw new Error(`unknown request type ${JSON.stringify(type)}`);
  }
}

self.onmessage = ({ data }) => {
  if (data?.type === "cancel") {
    if (running.has(data.id)) cancelled.add(data.id);
    return;
  }
  if (data?.type === "evaluate") running.add(data.id);
  queue = queue.then(async () => {
    try {
      const value = await handle(data);
      postMessage({ id: data.id, type: "result", value });
    } catch (error) {
      postMessage({ id: data.id, type: "error", error: describe(error) });
    }
  });
};
