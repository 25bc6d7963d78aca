//! A small WGSL preprocessor so that f32/f16/subgroup variants of a kernel share one
//! source file: `#include "name"`, `#define NAME [VALUE]`, `#ifdef`, `#ifndef`,
//! `#else`, `#endif`. Defined values replace whole-word occurrences of their name.

use crate::error::{Error, Result};

/// Source files that shaders may `#include`, by name.
pub const INCLUDES: &[(&str, &str)] = &[
    ("bytes.wgsl", include_str!("../../shaders/bytes.wgsl")),
    ("dequant.wgsl", include_str!("../../shaders/dequant.wgsl")),
];

/// Expands `source` (named `shader` for errors) with the given `(name, value)` defines.
/// An empty value defines a flag for `#ifdef` without a replacement.
pub fn preprocess(shader: &str, source: &str, defines: &[(String, String)]) -> Result<String> {
    let mut defines: Vec<(String, String)> = defines.to_vec();
    let mut out = String::with_capacity(source.len());
    expand(shader, source, &mut defines, &mut out, 0)?;
    Ok(out)
}

fn expand(
    shader: &str,
    source: &str,
    defines: &mut Vec<(String, String)>,
    out: &mut String,
    depth: usize,
) -> Result<()> {
    let fail = |line: usize, message: String| Error::Shader {
        shader: shader.to_string(),
        message: format!("line {}: {message}", line + 1),
    };
    if depth > 8 {
        return Err(fail(0, "includes nested deeper than 8".into()));
    }
    // Each entry: (this branch is active, some branch of this #if was taken, line of the #if).
    let mut stack: Vec<(bool, bool, usize)> = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let active = stack.iter().all(|&(on, _, _)| on);
        let trimmed = line.trim_start();
        if let Some(directive) = trimmed.strip_prefix('#') {
            let mut words = directive.split_whitespace();
            let keyword = words.next().unwrap_or("");
            let arg = words.next();
            match keyword {
                "ifdef" | "ifndef" => {
                    let name = arg.ok_or_else(|| fail(n, format!("#{keyword} needs a name")))?;
                    let defined = defines.iter().any(|(d, _)| d == name);
                    let on = defined == (keyword == "ifdef");
                    stack.push((on, on, n));
                }
                "else" => {
                    let top = stack
                        .last_mut()
                        .ok_or_else(|| fail(n, "#else without #ifdef".into()))?;
                    top.0 = !top.1;
                    top.1 = true;
                }
                "endif" => {
                    stack
                        .pop()
                        .ok_or_else(|| fail(n, "#endif without #ifdef".into()))?;
                }
                "define" if active => {
                    let name = arg.ok_or_else(|| fail(n, "#define needs a name".into()))?;
                    let value: Vec<&str> = words.collect();
                    defines.retain(|(d, _)| d != name);
                    defines.push((name.to_string(), value.join(" ")));
                }
                "include" if active => {
                    let name = arg
                        .map(|a| a.trim_matches('"'))
                        .ok_or_else(|| fail(n, "#include needs a file name".into()))?;
                    let (_, text) = INCLUDES
                        .iter()
                        .find(|(include, _)| *include == name)
                        .ok_or_else(|| fail(n, format!("unknown include \"{name}\"")))?;
                    expand(name, text, defines, out, depth + 1)?;
                }
                "define" | "include" => {}
                other => return Err(fail(n, format!("unknown directive #{other}"))),
            }
            continue;
        }
        if active {
            out.push_str(&substitute(line, defines));
            out.push('\n');
        }
    }
    if let Some(&(_, _, line)) = stack.last() {
        return Err(fail(line, "#ifdef without #endif".into()));
    }
    Ok(())
}

/// Replaces whole identifiers that name a define with a value.
fn substitute(line: &str, defines: &[(String, String)]) -> String {
    if defines.iter().all(|(_, v)| v.is_empty()) {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match defines.iter().find(|(d, v)| d == word && !v.is_empty()) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn ifdef_else_selects_one_branch_and_values_substitute() {
        let src = "#ifdef F16\nalias T = f16;\n#else\nalias T = f32;\n#endif\nconst WG: u32 = WORKGROUP;\nvar x_WORKGROUP: u32;";
        let f32_out = preprocess("t", src, &defs(&[("WORKGROUP", "64")])).unwrap();
        assert_eq!(
            f32_out,
            "alias T = f32;\nconst WG: u32 = 64;\nvar x_WORKGROUP: u32;\n"
        );
        let f16_out = preprocess("t", src, &defs(&[("F16", ""), ("WORKGROUP", "8")])).unwrap();
        assert_eq!(
            f16_out,
            "alias T = f16;\nconst WG: u32 = 8;\nvar x_WORKGROUP: u32;\n"
        );
    }

    #[test]
    fn nested_conditions_and_local_defines() {
        let src = "#ifndef A\n#define B 3\n#ifdef C\nc\n#else\nnot_c B\n#endif\n#endif\nend";
        assert_eq!(preprocess("t", src, &[]).unwrap(), "not_c 3\nend\n");
        assert_eq!(preprocess("t", src, &defs(&[("A", "")])).unwrap(), "end\n");
    }

    #[test]
    fn includes_are_expanded() {
        let out = preprocess("t", "#include \"bytes.wgsl\"\nfn main() {}", &[]).unwrap();
        assert!(out.contains("fn load_u8"));
        assert!(out.ends_with("fn main() {}\n"));
    }

    #[test]
    fn malformed_directives_are_errors_naming_the_line() {
        let unclosed = preprocess("s", "x\n#ifdef A\ny", &[])
            .unwrap_err()
            .to_string();
        assert!(unclosed.contains("shader s: line 2"), "{unclosed}");
        let error = |source| preprocess("s", source, &[]).unwrap_err().to_string();
        assert_eq!(error("#endif"), "shader s: line 1: #endif without #ifdef");
        assert_eq!(
            error("#include \"nope.wgsl\""),
            "shader s: line 1: unknown include \"nope.wgsl\""
        );
        assert_eq!(
            error("#pragma once"),
            "shader s: line 1: unknown directive #pragma"
        );
    }
}
