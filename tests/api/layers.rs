//! The layering `src/lib.rs` states, checked against the code: no module imports a module of a
//! layer above its own.

use std::{collections::BTreeSet, fs, path::Path};

/// The crate's top-level modules from the top layer down; each may import only those after it
/// (and itself). Modules of one layer may not import each other.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["cli"],
    &["startup"],
    &["server"],
    &["http"],
    &["app"],
    &["storage"],
    &["embedded_postgres"],
    &["domain", "telemetry", "config"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("src/lib.rs declares a module `{module}` that no layer holds"))
}

/// The top-level module a file of `src/` belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The crate's top-level modules that `source`'s code names: `crate::x`, or `orders::x` from
/// the binary. Comments and string literals are not code: a module's doc may say where its
/// callers are.
fn modules_named(source: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for prefix in ["crate::", "orders::"] {
            for (at, _) in code.match_indices(prefix) {
                let before = code[..at].chars().next_back();
                let in_string = code[..at].matches('"').count() % 2 == 1;
                if in_string || before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let name: String = code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if LAYERS.iter().any(|layer| layer.contains(&name.as_str())) {
                    named.insert(name);
                }
            }
        }
    }
    named
}

fn rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_of_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if relative == Path::new("lib.rs") {
            continue;
        }
        let module = module_of(relative);
        let layer = layer_of(&module);
        for named in modules_named(&fs::read_to_string(file).unwrap()) {
            if named != module && layer_of(&named) <= layer {
                upward.push(format!("{} names {named}", relative.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layering of src/lib.rs:\n{}",
        upward.join("\n")
    );
}
