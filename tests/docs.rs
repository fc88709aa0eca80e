//! The documentation speaks of the product: the README lists every file
//! of docs/, and no page points at the project's internal papers (issue
//! numbers, the vendor guide it replaces, the product contract's
//! sections).

use std::path::Path;

#[test]
fn the_readme_lists_every_doc_and_the_docs_speak_of_the_product() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut pages = vec![("README.md".to_string(), readme.clone())];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
            assert!(
                readme.contains(&format!("- `{name}`")),
                "README's docs list lacks {name}"
            );
            pages.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(pages.len() > 5, "the docs were read");
    for (name, text) in &pages {
        let lower = text.to_ascii_lowercase();
        for word in [
            "issue 1",
            "issue 2",
            "issue 3",
            "issue #",
            "shared/seed",
            "product.md",
            "seed §",
        ] {
            assert!(!lower.contains(word), "{name} mentions {word:?}");
        }
    }
}
