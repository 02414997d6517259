//! Changes keygate makes to its own config file, keeping the file's comments and layout
//! (toml_edit): adding a key id to a key store's `keys`. The file is replaced atomically
//! (temp file in the same directory, fsync, rename) with its permission bits kept, so a
//! running server's reload sees either the old file or the new one, never half of it.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// The config text with one key id added to one key store's `keys`.
#[derive(Debug)]
pub enum KeyListEdit {
    /// The key store already lists the key; the file needs no change.
    AlreadyListed,
    /// The new file text.
    Added(String),
}

/// Why the config file cannot be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// No `[[keystore]]` has this name.
    #[error("no key store named {name:?} in {file} (key stores: {known})")]
    UnknownKeystore {
        name: String,
        file: String,
        known: String,
    },
    /// The file is not TOML, or not in a shape this edit understands.
    #[error("{file}: {reason}")]
    Shape { file: String, reason: String },
    /// Reading or replacing the file failed.
    #[error("cannot {what} {file}: {source}")]
    Io {
        what: &'static str,
        file: String,
        source: std::io::Error,
    },
}

/// `text` (read from `file`) with `key_id` added to the `keys` of the `[[keystore]]` named
/// `keystore`, or `AlreadyListed`.
pub fn add_key(
    text: &str,
    file: &Path,
    keystore: &str,
    key_id: &str,
) -> Result<KeyListEdit, EditError> {
    let shape = |reason: String| EditError::Shape {
        file: file.display().to_string(),
        reason,
    };
    let mut doc: DocumentMut = text.parse().map_err(|e| shape(format!("{e}")))?;
    let stores = doc
        .get_mut("keystore")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| shape("no [[keystore]] tables".into()))?;
    let names: Vec<String> = stores
        .iter()
        .filter_map(|t| t.get("name").and_then(Item::as_str).map(str::to_owned))
        .collect();
    let Some(table) = stores
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(keystore))
    else {
        return Err(EditError::UnknownKeystore {
            name: keystore.to_owned(),
            file: file.display().to_string(),
            known: names.join(", "),
        });
    };
    let keys = keys_array(table).map_err(shape)?;
    if keys.iter().any(|v| v.as_str() == Some(key_id)) {
        return Ok(KeyListEdit::AlreadyListed);
    }
    push_like_neighbours(keys, key_id);
    Ok(KeyListEdit::Added(doc.to_string()))
}

/// The key store's `keys` array, created (empty) when the table has none.
fn keys_array(table: &mut Table) -> Result<&mut Array, String> {
    if !table.contains_key("keys") {
        table.insert("keys", Item::Value(Value::Array(Array::new())));
    }
    table
        .get_mut("keys")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| "the key store's `keys` is not an array".to_owned())
}

/// Appends `key_id` formatted like the array around it: on one line as `, "id"`, or on a
/// line of its own with the last element's indentation when the array spans lines.
fn push_like_neighbours(keys: &mut Array, key_id: &str) {
    let raw = |r: Option<&toml_edit::RawString>| {
        r.and_then(toml_edit::RawString::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let Some(last) = keys.iter().last() else {
        keys.push(key_id);
        return;
    };
    let last_prefix = raw(last.decor().prefix());
    let last_suffix = raw(last.decor().suffix());
    let trailing = keys.trailing().as_str().unwrap_or_default().to_owned();
    let multi_line = last_prefix.contains('\n') || trailing.contains('\n');
    if !multi_line {
        keys.push(key_id);
        return;
    }
    let indent = last_prefix
        .rsplit_once('\n')
        .map_or("    ", |(_, indent)| indent)
        .to_owned();
    let mut prefix = format!("\n{indent}");
    let mut suffix = String::new();
    if keys.trailing_comma() {
        // A comment after the last element's comma stays with that element.
        if let Some((comment, close_indent)) = trailing.rsplit_once('\n')
            && !comment.trim().is_empty()
        {
            prefix = format!("{comment}{prefix}");
            keys.set_trailing(format!("\n{close_indent}"));
        }
    } else if last_suffix.trim().is_empty() {
        // `"x"\n]`: the new element takes over the line break before `]`.
        suffix = last_suffix;
        if let Some(last) = keys.iter_mut().last() {
            last.decor_mut().set_suffix("");
        }
    }
    keys.push_formatted(Value::from(key_id).decorated(prefix, suffix));
}

/// Replaces `file` with `text`: a temp file in the same directory with the old file's
/// permission bits, fsynced, renamed over it. A symlink is followed: its target is replaced.
pub fn replace_file(file: &Path, text: &str) -> Result<(), EditError> {
    let io = |what, source| EditError::Io {
        what,
        file: file.display().to_string(),
        source,
    };
    let target: PathBuf = std::fs::canonicalize(file).map_err(|e| io("read", e))?;
    let mode = std::fs::metadata(&target)
        .map_err(|e| io("read", e))?
        .permissions()
        .mode();
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".keygate-config-")
        .tempfile_in(dir)
        .map_err(|e| io("write next to", e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| io("write", e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io("write", e))?;
    tmp.persist(&target).map_err(|e| io("replace", e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(text: &str, keystore: &str, key: &str) -> String {
        match add_key(text, Path::new("k.toml"), keystore, key).unwrap() {
            KeyListEdit::Added(t) => t,
            KeyListEdit::AlreadyListed => panic!("already listed"),
        }
    }

    const TWO_STORES: &str = "# top comment\n[server]\nlisten = \"127.0.0.1:1\" # inline\n\n\
        [[keystore]]\nname = \"a\"\nkeys = [\"foo\", \"x\"] # the keys\n\n\
        [[keystore.credential]]\naccess_key_id = \"A\"\n\n\
        # the second store\n[[keystore]]\nname = \"b\"\nkeys = []\n";

    #[test]
    fn adds_to_the_named_store_only_and_keeps_comments() {
        let out = added(TWO_STORES, "a", "bar");
        assert_eq!(
            out,
            TWO_STORES.replace("[\"foo\", \"x\"]", "[\"foo\", \"x\", \"bar\"]")
        );
        let out = added(TWO_STORES, "b", "bar");
        assert_eq!(out, TWO_STORES.replace("keys = []", "keys = [\"bar\"]"));
    }

    #[test]
    fn a_listed_key_is_not_added_twice() {
        let r = add_key(TWO_STORES, Path::new("k.toml"), "a", "x").unwrap();
        assert!(matches!(r, KeyListEdit::AlreadyListed));
    }

    #[test]
    fn an_unknown_store_names_the_known_ones() {
        let e = add_key(TWO_STORES, Path::new("k.toml"), "c", "bar").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no key store named \"c\" in k.toml (key stores: a, b)"
        );
    }

    #[test]
    fn a_store_without_keys_gets_a_list() {
        let text = "[[keystore]]\nname = \"a\"\n\n[[keystore.credential]]\naccess_key_id = \"A\"\n";
        let out = added(text, "a", "bar");
        assert_eq!(
            out,
            "[[keystore]]\nname = \"a\"\nkeys = [\"bar\"]\n\n[[keystore.credential]]\naccess_key_id = \"A\"\n"
        );
    }

    #[test]
    fn multi_line_lists_keep_their_layout() {
        let with_comma =
            "[[keystore]]\nname = \"a\"\nkeys = [\n  \"foo\", # main\n  \"x\", # other\n]\n";
        assert_eq!(
            added(with_comma, "a", "bar"),
            "[[keystore]]\nname = \"a\"\nkeys = [\n  \"foo\", # main\n  \"x\", # other\n  \"bar\",\n]\n"
        );
        let without = "[[keystore]]\nname = \"a\"\nkeys = [\n    \"foo\",\n    \"x\"\n]\n";
        assert_eq!(
            added(without, "a", "bar"),
            "[[keystore]]\nname = \"a\"\nkeys = [\n    \"foo\",\n    \"x\",\n    \"bar\"\n]\n"
        );
    }

    #[test]
    fn replacing_keeps_the_permission_bits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&file, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
