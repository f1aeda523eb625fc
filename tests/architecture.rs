//! Dependencies only flow down: the domain modules never mention the GUI or GPU crates,
//! and `render/` never mentions egui (see the architecture in `src/lib.rs`).

use std::path::{Path, PathBuf};

const DOMAIN: &[&str] = &[
    "volume", "io", "annotate", "metrics", "infer", "session", "demo", "view",
];

fn rust_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let single = path.with_extension("rs");
    if single.is_file() {
        out.push(single);
    }
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Lines of `text` that mention one of `crates` as a word (`egui_plot` counts as egui).
fn mentions(text: &str, crates: &[&str]) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let lower = line.to_ascii_lowercase();
            crates.iter().any(|c| {
                lower.match_indices(c).any(|(i, _)| {
                    let before = lower[..i].chars().last();
                    !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_')
                })
            })
        })
        .map(|(n, l)| (n + 1, l.trim().to_string()))
        .collect()
}

fn check(modules: &[&str], crates: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for m in modules {
        for file in rust_files(&src.join(m)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, content) in mentions(&text, crates) {
                violations.push(format!("{}:{line}: {content}", file.display()));
            }
        }
    }
    violations
}

#[test]
fn domain_modules_never_mention_gui_or_gpu_crates() {
    let v = check(DOMAIN, &["egui", "eframe", "wgpu"]);
    assert!(
        v.is_empty(),
        "domain modules must not use egui/eframe/wgpu:\n{}",
        v.join("\n")
    );
    // The check sees the modules that exist.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(!rust_files(&src.join("volume")).is_empty() && !rust_files(&src.join("io")).is_empty());
}

#[test]
fn render_never_mentions_egui() {
    let v = check(&["render"], &["egui", "eframe"]);
    assert!(v.is_empty(), "render/ is wgpu only:\n{}", v.join("\n"));
}

#[test]
fn the_checker_finds_mentions() {
    let text = "use egui::Ui;\nlet x = 1; // mentions wgpu here\nlet my_egui_thing = 2;\nuse egui_plot::Plot;";
    let found = mentions(text, &["egui", "wgpu"]);
    assert_eq!(
        found.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
}

/// libtorch stays in the AI helper: no library module mentions `tch`/`torch_sys`, so the
/// viewer's process never loads libtorch (see `infer::remote`).
#[test]
fn only_the_ai_helper_mentions_libtorch() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut seen = 0;
    for file in rust_files(&src) {
        if file.starts_with(src.join("bin/pulmo-ai")) {
            let text = std::fs::read_to_string(&file).unwrap();
            seen += mentions(&text, &["tch::", "torch_sys"]).len();
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, content) in mentions(&text, &["tch::", "torch_sys", "use tch"]) {
            violations.push(format!("{}:{line}: {content}", file.display()));
        }
    }
    assert!(
        violations.is_empty(),
        "libtorch outside src/bin/pulmo-ai:\n{}",
        violations.join("\n")
    );
    assert!(seen > 0, "the checker sees the helper's uses of tch");
}

/// The `pulmo` executable has no libtorch among its shared libraries (and `pulmo-ai`,
/// built alongside, has).
#[cfg(feature = "torch")]
#[test]
fn the_viewer_binary_does_not_link_libtorch() {
    let needed = |exe: &str| -> Vec<String> {
        let out = std::process::Command::new("readelf")
            .args(["-d", exe])
            .output()
            .expect("readelf (binutils) is installed");
        assert!(out.status.success(), "readelf -d {exe} failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .map(str::to_string)
            .collect()
    };
    let viewer = needed(env!("CARGO_BIN_EXE_pulmo"));
    assert!(!viewer.is_empty(), "readelf lists pulmo's libraries");
    assert!(
        !viewer
            .iter()
            .any(|l| l.contains("torch") || l.contains("c10")),
        "pulmo links libtorch:\n{}",
        viewer.join("\n")
    );
    let helper = needed(env!("CARGO_BIN_EXE_pulmo-ai"));
    assert!(
        helper.iter().any(|l| l.contains("libtorch_cpu")),
        "{helper:?}"
    );
}
