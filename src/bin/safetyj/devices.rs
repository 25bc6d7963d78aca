//! `safetyj devices`, and the GPU context the other subcommands open.

use safetyj::gpu::{Context, ContextOptions};

use crate::terminal::mib;

/// The GPU context of a run, after printing the software-renderer notice if any.
pub fn gpu_context() -> safetyj::Result<Context> {
    let ctx = Context::new_blocking()?;
    if let Some(notice) = ctx.software_notice() {
        eprintln!("{notice}");
    }
    Ok(ctx)
}

/// Lists the adapters with their limits and features, the one safetyj picks, the
/// CPU engine, and which engine `--device auto` runs.
pub fn run() -> safetyj::Result<()> {
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
    if !adapters.is_empty() {
        let ctx = pollster::block_on(Context::new(&options))?;
        println!("selected GPU: {} ({:?})", ctx.info.name, ctx.info.backend);
        if let Some(notice) = ctx.software_notice() {
            println!("{notice}");
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cpu engine: {threads} threads (quantized SIMD kernels; --device cpu)");
    let device = safetyj::device::Device::from_env()?;
    println!(
        "--device {} (SAFETYJ_DEVICE) runs on: {}",
        device.name(),
        device.resolve().name()
    );
    Ok(())
}
