//! `safetyj quantize`: a Hugging Face checkpoint into a quantized GGUF file.

use crate::terminal::human_bytes;

/// Arguments of `safetyj quantize`.
#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// A checkpoint directory (config.json + safetensors) or one .safetensors file
    /// with config.json beside it.
    source: std::path::PathBuf,
    /// The GGUF file to write.
    #[arg(short, long)]
    out: std::path::PathBuf,
    /// Block type of the matrices: q4_k, q4_0 or q8_0.
    #[arg(long = "type", default_value = "q4_k", value_parser = parse_quant_type)]
    dtype: safetyj::quant::DType,
}

fn parse_quant_type(name: &str) -> Result<safetyj::quant::DType, String> {
    use safetyj::model::convert::QUANTIZE_TYPES;
    QUANTIZE_TYPES
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("\"{name}\" is not one of q4_k, q4_0, q8_0"))
}

/// Converts the checkpoint with a progress bar, then prints what was written.
pub fn run(args: QuantizeArgs) -> safetyj::Result<()> {
    let QuantizeArgs { source, out, dtype } = args;
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tensors {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = safetyj::model::convert::quantize_checkpoint(
        &source,
        &out,
        dtype,
        &mut |done, total, tensor| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(tensor.to_string());
        },
    );
    bar.finish_and_clear();
    let report = report?;
    println!(
        "wrote {} ({}, {dtype}): {} tensors, {} in → {} out, {:.1} s{}",
        out.display(),
        report.arch.gguf_name(),
        report.tensors,
        human_bytes(report.bytes_in),
        human_bytes(report.bytes_out),
        started.elapsed().as_secs_f64(),
        if report.tokenizer {
            ""
        } else {
            " (no tokenizer found beside the checkpoint)"
        }
    );
    Ok(())
}
