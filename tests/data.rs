//! The Safety-J data and prompts shipped in `data/safety-j` (which the judge and the
//! meta-evaluation compile in) are byte-exact copies of the reference release in
//! `../shared/data/safety-j`, wherever that is beside the checkout (as in CI).

use std::path::Path;

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["label_level", "critique_level", "prompts"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            out.push(format!("{sub}/{name}"));
        }
    }
    out.sort();
    out
}

#[test]
fn shipped_safety_j_files_equal_the_reference_release() {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/safety-j");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/safety-j");
    if !reference.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs ../shared beside the checkout ({} is missing)",
            reference.display()
        );
        eprintln!("skipping: {} not found", reference.display());
        return;
    }
    let names = files(&ours);
    assert_eq!(names, files(&reference), "the shipped file list differs");
    assert!(names.len() >= 16, "{names:?}");
    for name in names {
        let a = std::fs::read(ours.join(&name)).unwrap();
        let b = std::fs::read(reference.join(&name)).unwrap();
        assert!(
            a == b,
            "data/safety-j/{name} differs from the reference release"
        );
    }
}
