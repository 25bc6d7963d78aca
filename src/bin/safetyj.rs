//! The `safetyj` command-line tool: a thin layer over the library.

#[cfg(target_arch = "wasm32")]
compile_error!(
    "the safetyj CLI is native-only; build the browser library with \
     `cargo build --lib --target wasm32-unknown-unknown --no-default-features --features web`"
);

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use safetyj::gpu::{Context, ContextOptions};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

fn devices() -> safetyj::Result<()> {
    let options = ContextOptions::from_env();
    let adapters = Context::adapters(&options);
    if adapters.is_empty() {
        println!("no GPU adapters found (on Linux without a GPU, install mesa-vulkan-drivers for lavapipe)");
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("[{i}] {} ({}, {})", a.name, a.backend, a.device_type);
        if !a.driver.is_empty() {
            println!("    driver: {}", a.driver);
        }
        let l = &a.limits;
        println!(
            "    limits: storage binding {}, buffer {}, workgroup storage {} KiB, {} invocations/workgroup, {} workgroups/dimension, {} storage buffers/stage",
            mib(l.max_storage_buffer_binding_size),
            mib(l.max_buffer_size),
            l.max_compute_workgroup_storage_size / 1024,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
        );
        let wanted = [
            (wgpu::Features::SHADER_F16, "shader-f16"),
            (wgpu::Features::SUBGROUP, "subgroups"),
            (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
        ];
        let features: Vec<String> = wanted
            .iter()
            .map(|(f, name)| {
                format!(
                    "{name} {}",
                    if a.features.contains(*f) { "yes" } else { "no" }
                )
            })
            .collect();
        println!("    features: {}", features.join(", "));
    }
    let ctx = pollster::block_on(Context::new(&options))?;
    println!("selected: {} ({:?})", ctx.info.name, ctx.info.backend);
    if let Some(notice) = ctx.software_notice() {
        println!("{notice}");
    }
    Ok(())
}
