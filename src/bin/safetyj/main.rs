//! The `safetyj` command-line tool: a thin layer over the library, one module per
//! subcommand.

#[cfg(target_arch = "wasm32")]
compile_error!(
    "the safetyj CLI is native-only; build the browser library with \
     `cargo build --lib --target wasm32-unknown-unknown --no-default-features --features web`"
);

mod bench;
mod devices;
mod eval;
mod generate;
mod head;
mod injection;
mod judge;
mod models;
mod prefs;
mod quantize;
mod runtime_dir;
mod serve;
mod synth;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "safetyj",
    version,
    about = "On-device bilingual LLM safety judge (Safety-J) on WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters with their backend, limits and features, and show which one
    /// safetyj would use (override with SAFETYJ_BACKEND / SAFETYJ_ADAPTER).
    Devices,
    /// Judge whether B's response in a dialogue is safe: verdict, P(unsafe), and
    /// (with --mode critique) a streamed critique.
    Judge(judge::JudgeArgs),
    /// Verdict heads: train one from labelled dialogues for your model and policy,
    /// or measure one.
    Head {
        #[command(subcommand)]
        command: head::HeadCommand,
    },
    /// Generate text from a model, streaming to stdout.
    Generate(generate::GenerateArgs),
    /// Benchmarks of judging quality: label-level metrics, or the critique
    /// meta-evaluation, against OpenAI-compatible endpoints.
    Eval {
        #[command(subcommand)]
        command: Box<eval::EvalCommand>,
    },
    /// Measure load time, prefill and decode speed, time to verdict and GPU memory of
    /// a GGUF model, against copy-bandwidth and GEMM ceilings measured on the same
    /// adapter.
    Bench(bench::BenchArgs),
    /// Write a GGUF file with the metadata and exactly the tensor names, types and
    /// shapes of another, every tensor filled with seeded random valid data (speed
    /// does not depend on the values), or with --header-only the header alone: a
    /// few MB that stand in for the real file as --like wherever it cannot travel.
    Synth(synth::SynthArgs),
    /// Serve the judge over HTTP: /v1/judge, OpenAI-compatible /v1/moderations and
    /// /v1/chat/completions, /v1/models, /health. Loads the model once.
    Serve(serve::ServeArgs),
    /// Convert a Hugging Face checkpoint (bf16/f16/f32 safetensors) into a quantized
    /// GGUF file with its config, tokenizer and chat template in the metadata.
    Quantize(quantize::QuantizeArgs),
    /// Iterative preference learning: split, sample critiques, score them, build DPO
    /// pairs, measure a model's preference margin on them.
    Prefs {
        #[command(subcommand)]
        command: prefs::PrefsCommand,
    },
}

fn main() -> ExitCode {
    runtime_dir::ensure();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices::run(),
        Command::Judge(args) => judge::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Head { command } => head::run(command),
        Command::Eval { command } => eval::run(*command),
        Command::Bench(args) => bench::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Prefs { command } => prefs::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
