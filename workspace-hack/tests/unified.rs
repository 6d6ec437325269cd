//! Every third-party crate that two of the binary packages (or the workspace's test build)
//! use is resolved with the same features in each, so that building one package after another
//! reuses what was built. Reads `cargo tree` (dependency resolution only, nothing is built);
//! on a difference it prints the lines `workspace-hack/Cargo.toml` needs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// A crate as cargo builds it: name, version, and whether it is built for the host (build
/// scripts and proc-macros, resolved apart from the rest).
type Unit = (String, String, bool);

/// The features of every third-party crate `cargo tree ARGS` resolves.
fn features(args: &[&str]) -> BTreeMap<Unit, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "--no-dedupe"])
        .args(["-e", "normal,build", "-f", "{p}|{f}"])
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("cargo tree prints UTF-8");
    let mut units = BTreeMap::new();
    // (depth, host) of the nodes above the current line; depth -> in a [build-dependencies]
    // section at that depth.
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut sections: BTreeMap<usize, bool> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // Each level of the tree's prefix is 4 characters ("│   ", "├── ", "└── ", "    ").
        let rest = line.trim_start_matches(['│', '├', '└', '─', ' ']);
        let depth = (line.chars().count() - rest.chars().count()) / 4;
        if rest.starts_with('[') {
            sections.insert(depth + 1, rest.starts_with("[build-dependencies]"));
            continue;
        }
        while stack.last().is_some_and(|(d, _)| *d >= depth) {
            stack.pop();
        }
        sections.retain(|d, _| *d <= depth);
        let (package, feature_list) = rest.rsplit_once('|').unwrap_or((rest, ""));
        let host = stack.last().is_some_and(|(_, host)| *host)
            || sections.get(&depth).copied().unwrap_or(false)
            || package.contains("(proc-macro)");
        stack.push((depth, host));
        let mut words = package.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            panic!("unexpected cargo tree line: {line}")
        };
        if package.contains("(/") {
            continue; // a workspace member
        }
        let features = feature_list
            .trim_end_matches(" (*)")
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        units.insert(
            (
                name.to_owned(),
                version.trim_start_matches('v').to_owned(),
                host,
            ),
            features,
        );
    }
    units
}

#[test]
fn each_shared_dependency_has_one_feature_set_across_the_binary_packages() {
    let views = [
        ("cargo build -p edge", features(&["-p", "edge"])),
        (
            "cargo build -p edge-client",
            features(&["-p", "edge-client"]),
        ),
        ("cargo build -p edge-bench", features(&["-p", "edge-bench"])),
        ("cargo build --workspace", features(&["--workspace"])),
        (
            "the workspace's test build",
            features(&["--workspace", "-e", "dev"]),
        ),
    ];
    assert!(
        views[1].1.keys().any(|(name, _, _)| name == "quinn"),
        "the trees were read"
    );
    let mut union: BTreeMap<&Unit, BTreeSet<String>> = BTreeMap::new();
    for (_, view) in &views {
        for (unit, features) in view {
            union
                .entry(unit)
                .or_default()
                .extend(features.iter().cloned());
        }
    }
    let mut differing = Vec::new();
    for (unit, all) in &union {
        let users: Vec<&str> = views
            .iter()
            .filter(|(_, view)| view.contains_key(*unit))
            .map(|(what, _)| *what)
            .collect();
        let short: Vec<&str> = views
            .iter()
            .filter(|(_, view)| view.get(*unit).is_some_and(|f| f != all))
            .map(|(what, _)| *what)
            .collect();
        if users.len() >= 2 && !short.is_empty() {
            let (name, version, host) = unit;
            let features: Vec<String> = all.iter().map(|f| format!("{f:?}")).collect();
            differing.push(format!(
                "[{}] {name} = {{ version = \"{version}\", default-features = false, features = [{}] }}  # fewer in: {}",
                if *host { "build-dependencies" } else { "dependencies" },
                features.join(", "),
                short.join("; ")
            ));
        }
    }
    assert!(
        differing.is_empty(),
        "dependencies built with different features by different packages (each would be \
         compiled again): add them to workspace-hack/Cargo.toml:\n{}",
        differing.join("\n")
    );
}
