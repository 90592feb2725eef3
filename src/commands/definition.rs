//! `--mask-file`, `--score-file`, `--param` and `--definition-file`: the definition of the
//! custom specs that are written without one (`custom,d128,bf16`). It is checked here, so an
//! error points into the file it is in; the specs then carry its canonical text in braces.

use super::usage;
use crate::cli::DefinitionArgs;
use flashgen_codegen::expr::{CustomMods, ParamType};
use std::path::Path;

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })
}

/// The definition the options give, if any.
pub fn definition(args: &DefinitionArgs) -> anyhow::Result<Option<CustomMods>> {
    if let Some(path) = &args.definition_file {
        let text = read(path, "definition")?;
        let mods =
            CustomMods::parse(&text).map_err(|e| usage(format!("in {}: {e}", path.display())))?;
        return Ok(Some(mods));
    }
    if args.mask_file.is_none() && args.score_file.is_none() {
        if !args.params.is_empty() {
            return Err(usage(
                "--param declares a parameter of --mask-file or --score-file; give one",
            ));
        }
        return Ok(None);
    }
    let mut params = Vec::new();
    for p in &args.params {
        let (name, ty) = p
            .split_once(':')
            .ok_or_else(|| usage(format!("--param `{p}`: write NAME:TYPE, e.g. doc:[i32]")))?;
        let ty = ParamType::from_name(ty.trim()).ok_or_else(|| {
            usage(format!(
                "--param `{p}`: the type is one of i32, f32, [i32], [f32]"
            ))
        })?;
        params.push((name.trim().to_string(), ty));
    }
    let mask = args
        .mask_file
        .as_deref()
        .map(|p| read(p, "mask"))
        .transpose()?;
    let score = args
        .score_file
        .as_deref()
        .map(|p| read(p, "score"))
        .transpose()?;
    let params: Vec<(&str, ParamType)> = params.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let mods = CustomMods::new(&params, mask.as_deref(), score.as_deref()).map_err(|e| {
        let file = if mask.as_deref().is_some_and(|m| m == e.source_text) {
            args.mask_file.as_deref()
        } else {
            args.score_file.as_deref()
        };
        match file {
            Some(f) if !e.source_text.is_empty() => usage(format!("in {}: {e}", f.display())),
            _ => usage(e.to_string()),
        }
    })?;
    Ok(Some(mods))
}

/// The spec texts with the options' definition put into every custom spec written without one.
/// A definition given both ways, or given while no spec is custom, is an error.
pub fn apply(texts: &[String], args: &DefinitionArgs) -> anyhow::Result<Vec<String>> {
    let Some(mods) = definition(args)? else {
        return Ok(texts.to_vec());
    };
    let mut used = false;
    let mut out = Vec::with_capacity(texts.len());
    for text in texts {
        let trimmed = text.trim_start();
        let bare = trimmed
            .strip_prefix("custom")
            .filter(|rest| rest.is_empty() || rest.trim_start().starts_with(','));
        match bare {
            Some(rest) => {
                used = true;
                out.push(format!("custom{{{}}}{rest}", mods.canonical()));
            }
            None if trimmed.starts_with("custom{") => {
                return Err(usage(format!(
                    "spec `{text}` has its own definition in braces; leave out --mask-file, --score-file and --definition-file, or the braces"
                )))
            }
            None => out.push(text.clone()),
        }
    }
    if !used {
        return Err(usage("a mask or score definition was given, but no spec is a custom spec written without one (e.g. custom,d128,bf16)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_files_fill_custom_specs() {
        let dir = std::env::temp_dir().join(format!("flashgen-def-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mask = dir.join("mask.txt");
        std::fs::write(&mask, "doc[q] == doc[k] && k <= q\n").unwrap();
        let args = DefinitionArgs {
            mask_file: Some(mask.clone()),
            params: vec!["doc:[i32]".into()],
            ..Default::default()
        };
        let texts = apply(&["custom,d128,bf16".into(), "dense,d64,bf16".into()], &args).unwrap();
        assert_eq!(
            texts[0],
            "custom{doc: [i32]; mask = doc[q] == doc[k] && k <= q},d128,bf16"
        );
        assert_eq!(texts[1], "dense,d64,bf16");
        // An error points into the file.
        std::fs::write(&mask, "doc[q] == doc[k] && k <= x").unwrap();
        let e = apply(&["custom,d128,bf16".into()], &args)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mask.txt") && e.contains("unknown name `x`") && e.ends_with('^'),
            "{e}"
        );
        std::fs::write(&mask, "k <= q").unwrap();
        let no_params = DefinitionArgs {
            mask_file: Some(mask.clone()),
            ..Default::default()
        };
        let e = apply(&["dense,d64,bf16".into()], &no_params)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no spec is a custom spec"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
