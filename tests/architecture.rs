//! Dependencies only flow down: the domain modules never mention the GUI or GPU crates,
//! `render/` never mentions egui, and every use of one of the library's top-level modules
//! by another is an edge of an acyclic allow-list (see the architecture in `src/lib.rs`).

use std::path::{Path, PathBuf};

const DOMAIN: &[&str] = &[
    "volume", "io", "annotate", "metrics", "followup", "batch", "infer", "session", "demo", "view",
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

/// The library's top-level modules and the modules each may use (`crate::…` or
/// `super::…` reaching another top-level module). Lower layers first; the list must be
/// acyclic, and an edge missing here fails [`module_edges_follow_the_allow_list`].
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("volume", &[]),
    ("view", &["volume"]),
    ("demo", &["volume"]),
    ("metrics", &["volume"]),
    ("annotate", &["volume", "view"]),
    ("io", &["volume", "annotate"]),
    ("followup", &["volume", "annotate", "metrics"]),
    ("batch", &["volume", "io", "metrics", "followup"]),
    ("infer", &["volume", "annotate", "demo", "io", "metrics"]),
    (
        "session",
        &[
            "volume", "view", "annotate", "demo", "io", "metrics", "infer", "followup",
        ],
    ),
    ("render", &["volume", "view"]),
    (
        "ui",
        &[
            "volume", "view", "annotate", "demo", "io", "metrics", "infer", "session", "render",
            "followup",
        ],
    ),
    (
        "cli",
        &[
            "volume", "view", "annotate", "demo", "io", "metrics", "infer", "session", "ui",
            "followup", "render", "batch",
        ],
    ),
];

/// The module path of a source file below `src/` (`io/dicom/seg.rs` → io, dicom, seg).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The top-level modules that `text` (the file at module path `path`) refers to:
/// `crate::m`, `crate::{m, …}` and `super::…` chains that climb to the crate root.
/// Comments are ignored.
fn referenced_modules(text: &str, path: &[String], modules: &[&str]) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut add = |name: &str| {
        let name = name.trim();
        if modules.contains(&name) && name != path[0] && !found.iter().any(|f| f == name) {
            found.push(name.to_string());
        }
    };
    let ident_end = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `pulmo_crate::` and the like
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let item = item.trim();
                add(&item[..ident_end(item)]);
            }
        } else {
            add(&rest[..ident_end(rest)]);
        }
    }
    // `super::` climbs one module per occurrence; from depth d, d supers reach the root.
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("super::") {
            continue; // counted from the chain's first `super`
        }
        let mut rest = &code[i..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        if climbs == path.len() {
            add(&rest[..ident_end(rest)]);
        }
    }
    found
}

fn top_level_modules(src: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| !matches!(n.as_str(), "lib" | "main" | "bin"))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn module_edges_follow_the_allow_list() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let listed: Vec<&str> = ALLOWED_EDGES.iter().map(|(m, _)| *m).collect();
    for m in &modules {
        assert!(
            listed.contains(&m.as_str()),
            "module `{m}` is missing from ALLOWED_EDGES: give it its allowed edges"
        );
    }
    let names: Vec<&str> = modules.iter().map(String::as_str).collect();
    let mut violations = Vec::new();
    let mut edges_seen = 0;
    for (module, allowed) in ALLOWED_EDGES {
        for file in rust_files(&src.join(module)) {
            let text = std::fs::read_to_string(&file).unwrap();
            let path = module_path(&src, &file);
            for used in referenced_modules(&text, &path, &names) {
                edges_seen += 1;
                if !allowed.contains(&used.as_str()) {
                    violations.push(format!("{}: {module} -> {used}", file.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "module edges outside the allow-list (lower modules never call upwards):\n{}",
        violations.join("\n")
    );
    assert!(edges_seen > 50, "the checker sees the tree's module uses");
}

/// The allow-list itself has no cycle: every module uses only modules listed before it.
#[test]
fn the_allowed_edges_are_acyclic_and_domain_modules_stay_below_the_gui() {
    for (i, (module, allowed)) in ALLOWED_EDGES.iter().enumerate() {
        let earlier: Vec<&str> = ALLOWED_EDGES[..i].iter().map(|(m, _)| *m).collect();
        for a in *allowed {
            assert!(
                earlier.contains(a),
                "`{module} -> {a}`: {a} must be listed before {module} (no cycles)"
            );
        }
        if DOMAIN.contains(module) {
            for upper in ["ui", "cli", "render"] {
                assert!(!allowed.contains(&upper), "domain `{module}` -> {upper}");
            }
        }
    }
}

#[test]
fn the_edge_checker_finds_uses() {
    let modules = ["volume", "io", "ui", "cli", "session"];
    let path = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
    let text = "use crate::volume::Volume;\nuse crate::{io, ui::App};\n// crate::cli in a comment\nlet x = super::super::session::Study;\nuse super::Local;";
    assert_eq!(
        referenced_modules(text, &path("io/dicom"), &modules),
        vec!["volume", "ui", "session"]
    );
    // From one level deep, one `super` reaches the root; `crate::io` from io is no edge.
    assert_eq!(
        referenced_modules(text, &path("session"), &modules),
        vec!["volume", "io", "ui"]
    );
}
