//! The pipeline cache: each shader compiled once per set of defines.

use std::sync::Arc;

use super::Context;
use crate::error::Result;

/// A WGSL kernel source: its file name (for errors and the cache key) and text.
#[derive(Debug, Clone, Copy)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

pub(super) type PipelineKey = (&'static str, Vec<(String, String)>);

impl Context {
    /// The compiled pipeline for `shader` with `defines`, built once and cached.
    /// Its entry point is `main`; bind group 0 is laid out from the shader.
    pub fn pipeline(
        &self,
        shader: Shader,
        defines: &[(&str, String)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut defines: Vec<(String, String)> = defines
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        defines.sort();
        let key = (shader.name, defines);
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let mut all = key.1.clone();
        if self.caps.shader_f16 {
            all.push(("HAS_F16".into(), String::new()));
        }
        let source = crate::gpu::preprocess(shader.name, shader.source, &all)?;
        let context = format!("compiling shader {} {:?}", shader.name, key.1);
        let pipeline = self.scoped(&context, || {
            let module = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(shader.name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })?;
        let pipeline = Arc::new(pipeline);
        self.pipeline_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                Arc::as_ptr(&pipeline) as usize,
                op_name(shader.name, &key.1),
            );
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

/// `matmul.wgsl` with defines GEMV, Q4_K and GEMV_ROWS=4u → `matmul[GEMV,Q4_K]`:
/// the valueless defines are the ones that pick a variant.
fn op_name(shader: &str, defines: &[(String, String)]) -> String {
    let stem = shader.trim_end_matches(".wgsl");
    let flags: Vec<&str> = defines
        .iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(name, _)| name.as_str())
        .collect();
    if flags.is_empty() {
        stem.to_string()
    } else {
        format!("{stem}[{}]", flags.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::ops::testing::ctx;

    #[test]
    fn op_names_keep_only_variant_flags() {
        let defines = [
            ("GEMV".to_string(), String::new()),
            ("GEMV_ROWS".to_string(), "4u".to_string()),
            ("Q4_K".to_string(), String::new()),
        ];
        assert_eq!(op_name("matmul.wgsl", &defines), "matmul[GEMV,Q4_K]");
        assert_eq!(op_name("rms_norm.wgsl", &[]), "rms_norm");
    }

    #[test]
    fn invalid_shader_is_a_validation_error_naming_the_shader() {
        let shader = Shader {
            name: "broken.wgsl",
            source: "@compute @workgroup_size(1) fn main() { let x: f32 = undefined_name; }",
        };
        match ctx().pipeline(shader, &[]) {
            Err(Error::Validation { context, message }) => {
                assert!(context.contains("broken.wgsl"), "{context}");
                assert!(!message.is_empty());
            }
            Err(other) => panic!("expected a validation error, got {other}"),
            Ok(_) => panic!("an undefined identifier compiled"),
        }
    }
}
