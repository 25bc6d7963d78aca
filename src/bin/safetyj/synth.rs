//! `safetyj synth`: a GGUF file shaped like another, filled with random weights.

use crate::models::gguf_file;
use crate::terminal::human_bytes;

/// Arguments of `safetyj synth`.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// The model to copy the layout of: a GGUF file, or a preset name (fetched into
    /// the cache on first use). Only its header is read, so a header-only file
    /// made by --header-only works as well as the real one.
    #[arg(long)]
    like: String,
    /// The GGUF file to write.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Write only the header: metadata (tokenizer included) and tensor infos, no
    /// tensor data. Such a file is not a loadable model.
    #[arg(long)]
    header_only: bool,
    /// Seed of the random weights: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Writes the file and prints what was written.
pub fn run(args: SynthArgs) -> safetyj::Result<()> {
    use safetyj::model::synth::{synth_gguf, SynthOptions};
    let SynthArgs {
        like,
        out,
        header_only,
        seed,
    } = args;
    let started = std::time::Instant::now();
    let like = gguf_file(&like, "--like", "synth copies the layout of")?;
    let report = synth_gguf(like.as_path(), &out, &SynthOptions { seed, header_only })?;
    println!(
        "wrote {} ({} tensors, {}, {}) like {}, {:.1} s",
        out.display(),
        report.tensors,
        human_bytes(report.bytes),
        if header_only {
            "header only".to_string()
        } else {
            format!("random weights, seed {seed}")
        },
        like.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
