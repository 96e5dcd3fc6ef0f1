//! What a flags file holds: one environment document, several by name, or a flagd flag file.

use std::collections::BTreeMap;
use std::path::Path;

use flag_core::{DocumentContents, Environment, ImportProblem, path_within, read_environment};
use serde_json::Value;

/// A document's text as JSON, from JSON or YAML (what an import over HTTP, the command line and
/// a flags file all read).
pub fn parse_document(text: &[u8], yaml: bool) -> Result<Value, ImportProblem> {
    if yaml {
        serde_yaml::from_slice::<Value>(text)
            .map_err(|error| ImportProblem::new("$", format!("not YAML: {error}")))
    } else {
        serde_json::from_slice::<Value>(text)
            .map_err(|error| ImportProblem::new("$", format!("not JSON: {error}")))
    }
}

/// Whether a file is YAML, by its name (`.yaml`, `.yml`); anything else is read as JSON.
pub fn is_yaml_file(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            extension.eq_ignore_ascii_case("yaml") || extension.eq_ignore_ascii_case("yml")
        })
}

/// Reads a flags file's text into its environments, each a valid whole (every reference kept
/// within it), or every problem with its path (`environments.staging.flags[2].variants`).
///
/// Shapes:
/// - `{"environments": {"<env>": <environment document>, ...}}`: several environments;
/// - an environment document (`{"environment", "flags": [...], "segments": [...]}`, as
///   `export` writes it): the environment it names, or `default` when it names none;
/// - a flagd flag file (`{"flags": {"<key>": {...}}}`): `default`.
pub(crate) fn read_flags_file(
    text: &[u8],
    yaml: bool,
    default: &Environment,
) -> Result<BTreeMap<Environment, DocumentContents>, Vec<ImportProblem>> {
    let document = parse_document(text, yaml).map_err(|problem| vec![problem])?;
    let mut environments = BTreeMap::new();
    let mut problems = Vec::new();
    match document.get("environments") {
        Some(Value::Object(named)) => {
            if let Some(extra) = document
                .as_object()
                .and_then(|members| members.keys().find(|name| *name != "environments"))
            {
                problems.push(ImportProblem::new(
                    extra.clone(),
                    "a file of several environments holds only `environments`",
                ));
            }
            for (name, environment) in named {
                let path = format!("environments.{name}");
                match Environment::parse(name) {
                    Ok(env) => match read_environment(environment) {
                        Ok(contents) => {
                            environments.insert(env, contents);
                        }
                        Err(more) => problems.extend(more.into_iter().map(|problem| {
                            ImportProblem::new(path_within(&path, &problem.path), problem.message)
                        })),
                    },
                    Err(error) => problems.push(ImportProblem::new(path, error.to_string())),
                }
            }
        }
        Some(_) => problems.push(ImportProblem::new(
            "environments",
            "environments is an object: {\"<environment>\": {\"flags\": [...], \"segments\": [...]}}",
        )),
        None => {
            let env = match document.get("environment") {
                None | Some(Value::Null) => Ok(default.clone()),
                Some(Value::String(name)) => Environment::parse(name)
                    .map_err(|error| ImportProblem::new("environment", error.to_string())),
                Some(_) => Err(ImportProblem::new("environment", "environment must be a string")),
            };
            match (env, read_environment(&document)) {
                (Ok(env), Ok(contents)) => {
                    environments.insert(env, contents);
                }
                (env, contents) => {
                    problems.extend(env.err());
                    problems.extend(contents.err().into_iter().flatten());
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(environments)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking

    use super::*;

    fn default() -> Environment {
        Environment::parse("production").unwrap()
    }

    #[test]
    fn json_and_yaml_read_alike() {
        let json = parse_document(br#"{"flags": [{"key": "a", "enabled": true}]}"#, false).unwrap();
        let yaml = parse_document(b"flags:\n  - key: a\n    enabled: true\n", true).unwrap();
        assert_eq!(json, yaml);
        assert!(parse_document(b"{", false).is_err());
        assert!(parse_document(b"flags: [", true).is_err());
        assert!(is_yaml_file(Path::new("flags.YML")));
        assert!(!is_yaml_file(Path::new("flags.json")));
    }

    #[test]
    fn every_shape_names_its_environments() {
        let several = br#"{"environments": {
            "staging": {"flags": [{"key": "a", "enabled": true}]},
            "production": {"flags": []}
        }}"#;
        let read = read_flags_file(several, false, &default()).unwrap();
        assert_eq!(
            read.keys().map(Environment::as_str).collect::<Vec<_>>(),
            ["production", "staging"]
        );
        let named = br#"{"environment": "edge", "flags": [{"key": "a"}]}"#;
        let read = read_flags_file(named, false, &default()).unwrap();
        assert_eq!(
            read.keys().map(Environment::as_str).collect::<Vec<_>>(),
            ["edge"]
        );
        let flagd = br#"{"flags": {"a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}"#;
        let read = read_flags_file(flagd, false, &default()).unwrap();
        assert_eq!(read[&default()].flags.len(), 1);
    }

    #[test]
    fn problems_carry_the_path_of_their_environment() {
        let text = br#"{"environments": {
            "staging": {"flags": [{"key": "a", "rules": [{"conditions": [{"operator": "in_segment", "value": "gone"}], "variant": "on"}]}]},
            "Bad Name": {"flags": []}
        }}"#;
        let problems = read_flags_file(text, false, &default()).unwrap_err();
        let paths: Vec<&str> = problems
            .iter()
            .map(|problem| problem.path.as_str())
            .collect();
        assert!(paths.contains(&"environments.Bad Name"), "{problems:?}");
        assert!(
            paths
                .iter()
                .any(|path| path.starts_with("environments.staging.flags[0]")),
            "{problems:?}"
        );
    }
}
