//! The build context `host deploy` sends to the container runtime: the
//! context directory as a tar, less what its `.dockerignore` leaves out,
//! read as `docker build` reads it (moby's `dockerignore` and
//! `patternmatcher`): one pattern a line, `#` comments, `!` exceptions,
//! the last matching line deciding; `*` and `?` within one path segment,
//! `**` across any number; a pattern holds from the context's root, and
//! a directory it matches takes everything inside along. The Dockerfile
//! and `.dockerignore` are sent even when they match, as docker does: the
//! build needs them.

use regex::Regex;
use std::io;
use std::path::Path;

const DOCKERIGNORE: &str = ".dockerignore";

/// The context directory as a tar archive.
pub fn pack(context: &Path, dockerfile: &str) -> io::Result<Vec<u8>> {
    let ignore = match std::fs::read_to_string(context.join(DOCKERIGNORE)) {
        Ok(text) => Ignore::parse(&text, dockerfile)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(e),
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    add_dir(&mut builder, context, "", &ignore)?;
    builder.into_inner()
}

/// Adds what is under `dir` (`relative` to the context, "" for its root).
fn add_dir(
    builder: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    relative: &str,
    ignore: &Ignore,
) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        let path = if relative.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{relative}/{}", name.to_string_lossy())
        };
        let is_dir = entry.file_type()?.is_dir();
        if ignore.excludes(&path) {
            // An ignored directory is still walked when an exception
            // may take back something inside it.
            if is_dir && ignore.may_take_back_inside(&path) {
                add_dir(builder, &entry.path(), &path, ignore)?;
            }
            continue;
        }
        builder.append_path_with_name(entry.path(), &path)?;
        if is_dir {
            add_dir(builder, &entry.path(), &path, ignore)?;
        }
    }
    Ok(())
}

/// A `.dockerignore`, compiled.
#[derive(Default)]
struct Ignore {
    patterns: Vec<Pattern>,
}

struct Pattern {
    /// As cleaned, for the exceptions' prefix test.
    text: String,
    regex: Regex,
    exception: bool,
}

impl Ignore {
    fn parse(text: &str, dockerfile: &str) -> io::Result<Ignore> {
        let mut patterns = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_start_matches('\u{feff}');
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            let (exception, line) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if line.is_empty() {
                continue;
            }
            let text = clean(line);
            let regex = Regex::new(&to_regex(&text)).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{DOCKERIGNORE} line {}: {line:?}: {e}", number + 1),
                )
            })?;
            patterns.push(Pattern {
                text,
                regex,
                exception,
            });
        }
        let mut ignore = Ignore { patterns };
        // What docker's CLI does: the build cannot do without these two.
        let dockerfile = clean(dockerfile);
        for needed in [DOCKERIGNORE, dockerfile.as_str()] {
            if ignore.excludes(needed)
                && let Ok(regex) = Regex::new(&to_regex(needed))
            {
                ignore.patterns.push(Pattern {
                    text: needed.to_string(),
                    regex,
                    exception: true,
                });
            }
        }
        Ok(ignore)
    }

    /// patternmatcher's `MatchesOrParentMatches`: a pattern matches a path
    /// or one of its parent directories; the last matching line decides.
    fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // An exclusion only matters for what is not yet excluded, and
            // an exception only for what is.
            if pattern.exception != excluded {
                continue;
            }
            let hit = pattern.regex.is_match(path)
                || (1..parents.len()).any(|n| pattern.regex.is_match(&parents[..n].join("/")));
            if hit {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether an exception names something under `dir`.
    fn may_take_back_inside(&self, dir: &str) -> bool {
        let dir = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exception && format!("{}/", p.text).starts_with(&dir))
    }
}

/// Go's `filepath.Clean`, and no leading `/`: patterns are relative to
/// the context.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !pattern.starts_with('/') {
                    parts.push("..");
                }
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return ".".into();
    }
    parts.join("/")
}

/// patternmatcher's translation of a pattern into a regular expression.
fn to_regex(pattern: &str) -> String {
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is `**`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    regex.push_str(".*");
                } else {
                    regex.push_str("(.*/)?");
                }
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '\\' => match chars.next() {
                Some(next) => regex.push_str(&regex::escape(&next.to_string())),
                None => regex.push_str("\\\\"),
            },
            '[' | ']' => regex.push(c),
            c => regex.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex.push('$');
    regex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(archive: &[u8]) -> Vec<String> {
        let mut files: Vec<String> = tar::Archive::new(archive)
            .entries()
            .expect("entries")
            .map(|entry| entry.expect("entry"))
            .filter(|entry| entry.header().entry_type().is_file())
            .map(|entry| {
                let path = entry.path().expect("path").to_string_lossy().into_owned();
                path.trim_start_matches("./").to_string()
            })
            .collect();
        files.sort();
        files
    }

    /// What `docker build` leaves out, `host deploy` leaves out: `.env` and
    /// `secret.txt` went into the image.
    #[test]
    fn dockerignore_keeps_files_out_of_the_context_as_docker_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let ignore = "# secrets\n.env\n  secret.txt  \n*.key\nlogs/\n!logs/keep.log\n**/*.tmp\n/build\nDockerfile\n.dockerignore\n";
        for (path, text) in [
            (".dockerignore", ignore),
            ("Dockerfile", "FROM scratch\n"),
            (".env", "TOKEN=1"),
            ("secret.txt", "s3cret"),
            ("app.py", "print()"),
            ("id.key", "k"),
            ("sub/id.key", "k"),
            ("logs/a.log", "a"),
            ("logs/keep.log", "kept"),
            ("sub/x.tmp", "t"),
            ("sub/deep/z.tmp", "t"),
            ("sub/y.txt", "y"),
            ("sub/.env", "TOKEN=2"),
            ("build/out", "o"),
            ("sub/build/out", "o"),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, text).expect("write");
        }
        let archive = pack(root, "Dockerfile").expect("pack");
        assert_eq!(
            files_in(&archive),
            [
                // Sent even when ignored: docker needs both to build.
                ".dockerignore",
                "Dockerfile",
                "app.py",
                "logs/keep.log",
                // Patterns without `**` hold at the root only, as in docker.
                "sub/.env",
                "sub/build/out",
                "sub/id.key",
                "sub/y.txt",
            ]
        );
    }

    #[test]
    fn patterns_translate_as_docker_translates_them() {
        let ignore = |text: &str| Ignore::parse(text, "Dockerfile").expect("parse");
        let cases = [
            ("*.md", "README.md", true),
            ("*.md", "docs/a.md", false),
            ("**/*.md", "docs/deep/a.md", true),
            ("**/*.md", "a.md", true),
            ("docs/**", "docs/a/b", true),
            ("docs/**", "docsx", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("./x/../y/", "y/z", true),
            ("/abs", "abs", true),
            ("[ab].txt", "b.txt", true),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("a.b", "axb", false),
        ];
        for (pattern, path, excluded) in cases {
            assert_eq!(ignore(pattern).excludes(path), excluded, "{pattern} {path}");
        }
        // The last matching line decides, exceptions included.
        let layered = ignore("*.log\n!keep*.log\nkeep-not.log");
        assert!(layered.excludes("a.log"));
        assert!(!layered.excludes("keep.log"));
        assert!(layered.excludes("keep-not.log"));
        assert!(
            Ignore::parse("[", "Dockerfile").is_err(),
            "a bad pattern is an error"
        );
    }

    #[test]
    fn without_a_dockerignore_everything_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::write(dir.path().join(".env"), "x").expect("write");
        let archive = pack(dir.path(), "Dockerfile").expect("pack");
        assert_eq!(files_in(&archive), [".env", "Dockerfile"]);
    }
}
