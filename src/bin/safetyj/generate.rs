//! `safetyj generate`: text from a model, streamed to stdout.

use crate::models::ModelArg;
use crate::terminal::status_line;

/// Arguments of `safetyj generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    /// The prompt text (plain text: never parsed for control tokens).
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a ChatML user turn (system "You are a helpful assistant.")
    /// and stop at <|im_end|>.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k for sampling (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Top-p for sampling (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed for sampling: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Streams the generated text to stdout and the speeds to stderr.
pub fn run(args: GenerateArgs) -> safetyj::Result<()> {
    use safetyj::model::generate::{GenerateOptions, Sampling};
    use std::io::Write;
    let named =
        safetyj::device::open_named(&args.model.model, args.model.device()?, status_line())?;
    let (engine, tokenizer) = (named.engine, named.tokenizer);
    eprintln!();
    let mut ids = Vec::new();
    if args.chat {
        ids.extend(tokenizer.encode_special(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
        )?);
        ids.extend(tokenizer.encode_text(&args.prompt)?);
        ids.extend(tokenizer.encode_special("<|im_end|>\n<|im_start|>assistant\n")?);
    } else {
        ids.extend(tokenizer.bos_id());
        ids.extend(tokenizer.encode_text(&args.prompt)?);
    }
    let sampling = if args.temperature > 0.0 {
        Sampling::Random {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        }
    } else {
        Sampling::Greedy
    };
    let mut stop_tokens: Vec<u32> = tokenizer.eos_id().into_iter().collect();
    stop_tokens.extend(tokenizer.token_id("<|im_end|>"));
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_tokens,
        stop_strings: Vec::new(),
    };
    let capacity = (ids.len() + args.max_tokens + 1).min(engine.config().context);
    let mut session = engine.new_session(capacity)?;
    let generation =
        pollster::block_on(
            engine.generate(&mut session, &tokenizer, &ids, &options, |piece| {
                print!("{piece}");
                let _ = std::io::stdout().flush();
                std::ops::ControlFlow::Continue(())
            }),
        )?;
    println!();
    let tokens = generation.tokens.len();
    eprintln!(
        "{} prompt tokens in {:.2} s ({:.1} tok/s); {tokens} generated in {:.2} s ({:.1} tok/s); stop: {:?}",
        ids.len(),
        generation.prefill.as_secs_f64(),
        ids.len() as f64 / generation.prefill.as_secs_f64(),
        generation.decode.as_secs_f64(),
        tokens as f64 / generation.decode.as_secs_f64().max(1e-9),
        generation.stop
    );
    Ok(())
}
