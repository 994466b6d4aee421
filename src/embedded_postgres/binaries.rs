//! Finding the machine's PostgreSQL server binaries (`initdb`, `postgres`).
//!
//! Only looks, and builds the commands that run them: it installs nothing.

use std::{fs, path::PathBuf, process::Command};

use super::EmbeddedError;

/// Where the server binaries are.
#[derive(Debug, Clone)]
pub(super) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Looks where PostgreSQL is usually installed: PATH, `pg_config --bindir`,
    /// `/usr/lib/postgresql/<newest>/bin`, Homebrew.
    pub(super) fn find() -> Result<Self, EmbeddedError> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
            && output.status.success()
        {
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            candidates.push(PathBuf::from(dir));
        }
        candidates.extend(versioned_dirs("/usr/lib/postgresql", "bin"));
        candidates.extend(versioned_dirs("/opt/homebrew/opt", "bin"));
        candidates.extend(versioned_dirs("/usr/local/opt", "bin"));
        candidates.push(PathBuf::from("/opt/homebrew/bin"));
        candidates.push(PathBuf::from("/usr/local/bin"));
        Self::find_in(candidates)
    }

    /// The first of `candidates` that holds both `initdb` and `postgres`.
    fn find_in(candidates: impl IntoIterator<Item = PathBuf>) -> Result<Self, EmbeddedError> {
        candidates
            .into_iter()
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
            .map(|dir| Self { dir })
            .ok_or(EmbeddedError::BinariesNotFound)
    }

    /// A command running the binary `name` with an environment of its own: none of ours.
    ///
    /// Ours may hold secrets (`DATABASE_URL`, tokens, whatever root's shell had), and the
    /// server runs as another user, whom nothing of ours is for: whoever could read its
    /// processes' environment (`/proc/<pid>/environ`, `ps e`) would read them. It gets only
    /// what it uses: `LC_ALL=C` (clusters are made with the C locale; and with no locale set,
    /// the server refuses to start on macOS, "postmaster became multithreaded during
    /// startup"), and `TZ` when it is set, the time zone initdb gives the cluster. Nothing
    /// needs `PATH` or `PGDATA`: initdb finds `postgres` beside itself, and every command is
    /// given its data folder.
    pub(super) fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.dir.join(name));
        command.env_clear().env("LC_ALL", "C");
        if let Some(zone) = std::env::var_os("TZ") {
            command.env("TZ", zone);
        }
        command
    }
}

/// `<root>/<entry>/<leaf>` for every entry of `root` that looks like a PostgreSQL install,
/// newest version first.
fn versioned_dirs(root: &str, leaf: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .trim_start_matches("postgresql@")
                .trim_start_matches("postgresql")
                .split('.')
                .next()
                .and_then(|major| major.parse().ok())?;
            Some((version, entry.path().join(leaf)))
        })
        .collect();
    dirs.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "orders-binaries-test-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn binaries_are_found_only_where_both_initdb_and_postgres_are() {
        let only_initdb = scratch_dir("only-initdb");
        fs::write(only_initdb.join("initdb"), "").unwrap();
        let both = scratch_dir("both");
        fs::write(both.join("initdb"), "").unwrap();
        fs::write(both.join("postgres"), "").unwrap();

        let found = Binaries::find_in([only_initdb.clone(), both.clone()]).unwrap();

        assert_eq!(found.dir, both);
        let _ = fs::remove_dir_all(only_initdb);
        let _ = fs::remove_dir_all(both);
    }

    #[test]
    fn without_binaries_the_error_says_what_to_install_or_set() {
        let empty = scratch_dir("empty");

        let error = Binaries::find_in([empty.clone()]).unwrap_err();

        let message = error.to_string();
        assert!(matches!(error, EmbeddedError::BinariesNotFound));
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("brew install"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
        let _ = fs::remove_dir_all(empty);
    }

    #[test]
    fn the_binaries_get_none_of_our_environment() {
        let binaries = Binaries {
            dir: PathBuf::from("/usr/bin"),
        };

        let command = binaries.command("postgres");

        // env_clear, then only these: the command's environment is exactly what it was given.
        let mut given: Vec<(String, Option<String>)> = command
            .get_envs()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.map(|value| value.to_string_lossy().into_owned()),
                )
            })
            .collect();
        given.retain(|(name, _)| name != "TZ");
        assert_eq!(given, [("LC_ALL".to_owned(), Some("C".to_owned()))]);
        let debug = format!("{command:?}");
        assert!(debug.starts_with("env -i "), "{debug}");
    }

    #[test]
    fn versioned_installs_are_tried_newest_first() {
        let root = scratch_dir("versions");
        for name in ["13", "postgresql@16", "15", "not-a-version"] {
            fs::create_dir_all(root.join(name).join("bin")).unwrap();
        }

        let dirs = versioned_dirs(root.to_str().unwrap(), "bin");

        assert_eq!(
            dirs,
            [
                root.join("postgresql@16/bin"),
                root.join("15/bin"),
                root.join("13/bin")
            ]
        );
        let _ = fs::remove_dir_all(root);
    }
}
