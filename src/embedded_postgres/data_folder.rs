//! The cluster's data folder: where its files live, and creating the cluster there with
//! initdb.
//!
//! When we are root, the server runs as an unprivileged user, who may be unable to reach the
//! configured folder (a project cloned under root's home, mode 700). Then the files live in a
//! folder of that user's own instead: under its home when it has one (Debian's `postgres`:
//! `/var/lib/postgresql/orders-clusters/`), else under `/var/tmp/orders-clusters/`, named by a
//! hash of the configured folder's canonical path, with a symlink in the configured place
//! pointing there. Every later start follows that link.
//!
//! Never removes a folder that holds anything but an unfinished initdb of ours, and never
//! follows a name in a shared folder (`/var/tmp`) that someone else made.

use std::{
    fs, io,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use super::{
    Durability, EmbeddedError, SUPERUSER,
    binaries::Binaries,
    io_error,
    process::{RunAs, run_to_completion},
};

/// Where the cluster configured at `configured` keeps its files, as a canonical path (which
/// may not exist yet: then its parent does). Creates the folders and the link that a cluster
/// relocated for the server user needs.
pub(super) fn locate(configured: &Path, run_as: Option<&RunAs>) -> Result<PathBuf, EmbeddedError> {
    let configured = std::path::absolute(configured).map_err(io_error(configured))?;
    let (Some(parent), Some(name)) = (configured.parent(), configured.file_name()) else {
        return Err(EmbeddedError::NotACluster(configured));
    };
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    // The last component stays as it is: it may be our link to a relocated cluster.
    let configured = fs::canonicalize(parent)
        .map_err(io_error(parent))?
        .join(name);
    let Some(user) = run_as else {
        return Ok(fs::canonicalize(&configured).unwrap_or(configured));
    };
    let relocated = relocated_folder(&configured, user);
    let entry = match fs::symlink_metadata(&configured) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(&configured)(error)),
    };
    match entry {
        Some(link) if link.file_type().is_symlink() => {
            if fs::read_link(&configured).is_ok_and(|target| target == relocated) {
                // Ours, from an earlier start. Should its target have been removed since, a
                // new cluster is made there.
                let relocated = prepare_relocation(&relocated, user)?;
                tracing::info!(
                    configured = %configured.display(),
                    files = %relocated.display(),
                    "the PostgreSQL server user cannot reach the data folder: the cluster's files are in a folder of that user's, linked from the data folder"
                );
                return Ok(relocated);
            }
            // Someone else's link: followed, as PostgreSQL would.
            let target = fs::canonicalize(&configured).map_err(io_error(&configured))?;
            if !reachable_by(&target, user)? {
                return Err(EmbeddedError::Unreachable {
                    path: target,
                    uid: user.uid,
                });
            }
            Ok(target)
        }
        _ if reachable_by(&configured, user)? => Ok(configured),
        Some(folder) if !(folder.is_dir() && is_empty(&configured)?) => {
            // Its files are not ours to move.
            Err(EmbeddedError::Unreachable {
                path: configured,
                uid: user.uid,
            })
        }
        existing => {
            if existing.is_some() {
                fs::remove_dir(&configured).map_err(io_error(&configured))?;
            }
            let files = prepare_relocation(&relocated, user)?;
            // Says whose cluster it is to someone looking in that folder.
            let note = relocated.with_extension("source");
            fs::write(&note, format!("{}\n", configured.display())).map_err(io_error(&note))?;
            std::os::unix::fs::symlink(&relocated, &configured).map_err(io_error(&configured))?;
            tracing::warn!(
                configured = %configured.display(),
                files = %files.display(),
                "the PostgreSQL server user cannot reach the data folder: keeping the cluster's files in a folder of that user's, linked from the data folder"
            );
            Ok(files)
        }
    }
}

/// Where a cluster configured at the canonical path `configured` lives when the server user
/// cannot reach it. The same path always gives the same folder, so later starts find it.
fn relocated_folder(configured: &Path, user: &RunAs) -> PathBuf {
    // Its own home survives reboots and no temp-file cleaner empties it; users without one
    // (nobody's is /nonexistent) get /var/tmp, which at least survives reboots.
    let home_is_theirs = fs::symlink_metadata(&user.home)
        .is_ok_and(|metadata| metadata.is_dir() && metadata.uid() == user.uid);
    let base = if home_is_theirs {
        user.home.join("orders-clusters")
    } else {
        PathBuf::from("/var/tmp/orders-clusters")
    };
    base.join(format!(
        "{:016x}",
        stable_hash(configured.as_os_str().as_bytes())
    ))
}

/// 64-bit FNV-1a. Its output is fixed by its definition, unlike std's hashers, which may
/// change between Rust releases and would then lose track of every relocated cluster.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Makes the folder that holds `relocated` a folder of the server user's own, closed to
/// everyone else, and returns `relocated`'s canonical path.
///
/// That folder may sit in a folder anyone can write to (`/var/tmp`), where another user could
/// have made the name first, as a symlink elsewhere or a folder of theirs: such a name is
/// refused, never followed or taken over.
fn prepare_relocation(relocated: &Path, user: &RunAs) -> Result<PathBuf, EmbeddedError> {
    let base = relocated
        .parent()
        .expect("a relocated cluster's folder has a parent");
    match fs::create_dir(base) {
        Ok(()) => {
            std::os::unix::fs::chown(base, Some(user.uid), Some(user.gid))
                .map_err(io_error(base))?;
            fs::set_permissions(base, fs::Permissions::from_mode(0o700)).map_err(io_error(base))?;
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io_error(base)(error)),
    }
    let metadata = fs::symlink_metadata(base).map_err(io_error(base))?;
    if !metadata.is_dir() || metadata.uid() != user.uid {
        return Err(EmbeddedError::ForeignFolder {
            path: base.to_owned(),
            uid: user.uid,
        });
    }
    check_reachable(base, user)?;
    let base = fs::canonicalize(base).map_err(io_error(base))?;
    Ok(base.join(relocated.file_name().unwrap_or_default()))
}

fn is_empty(dir: &Path) -> Result<bool, EmbeddedError> {
    let mut entries = fs::read_dir(dir).map_err(io_error(dir))?;
    Ok(entries.next().is_none())
}

/// Creates a cluster in `data_dir`. initdb runs in a sibling folder that is renamed into place
/// only once it has finished, so a start interrupted during initdb (a kill, a power cut) leaves
/// no half-made cluster that every later start would trip over.
pub(super) fn initialise(
    binaries: &Binaries,
    data_dir: &Path,
    durability: Durability,
    run_as: Option<&RunAs>,
) -> Result<(), EmbeddedError> {
    let name = data_dir.file_name().unwrap_or_default().to_string_lossy();
    let staging = data_dir.with_file_name(format!(".{name}.initdb"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    prepare_owned_folder(&staging, run_as)?;
    let mut initdb = binaries.command("initdb");
    initdb
        .arg("--pgdata")
        .arg(&staging)
        .args(["--username", SUPERUSER, "--auth", "trust"])
        .args(["--encoding", "UTF8", "--locale", "C"]);
    if durability == Durability::Throwaway {
        initdb.arg("--no-sync");
    }
    run_to_completion("initdb", &mut initdb, run_as)?;
    // An empty folder (say, made by hand) gives way; one with anything in it is not ours to remove.
    if data_dir.exists() {
        fs::remove_dir(data_dir).map_err(|_| EmbeddedError::NotACluster(data_dir.to_owned()))?;
    }
    fs::rename(&staging, data_dir).map_err(io_error(data_dir))
}

/// Creates `dir` for the server: reachable by the user it runs as, owned by it, and closed to
/// everyone else, as PostgreSQL insists.
fn prepare_owned_folder(dir: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    if let Some(user) = run_as {
        check_reachable(dir, user)?;
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(io_error(dir))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))
}

/// Fails early, with a message that says what to do, when `user` cannot walk down to `dir`;
/// initdb would fail later with a bare "permission denied".
fn check_reachable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    if reachable_by(dir, user)? {
        Ok(())
    } else {
        Err(EmbeddedError::Unreachable {
            path: dir.to_owned(),
            uid: user.uid,
        })
    }
}

/// Whether `user` may pass through every folder above `dir`, judged by their mode bits.
fn reachable_by(dir: &Path, user: &RunAs) -> Result<bool, EmbeddedError> {
    for ancestor in dir.ancestors().skip(1) {
        let metadata = fs::metadata(ancestor).map_err(io_error(ancestor))?;
        let mode = metadata.mode();
        let searchable = mode & 0o001 != 0
            || (metadata.uid() == user.uid && mode & 0o100 != 0)
            || (metadata.gid() == user.gid && mode & 0o010 != 0);
        if !searchable {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relocation_hash_is_fnv1a_so_it_never_changes_between_builds() {
        // The reference values of 64-bit FNV-1a.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn folders_closed_to_the_user_above_a_path_make_it_unreachable() {
        let root = std::env::temp_dir().join(format!("orders-reach-{}", std::process::id()));
        let closed = root.join("closed");
        fs::create_dir_all(closed.join("inner")).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
        // Someone who owns neither folder nor shares its group.
        let stranger = RunAs {
            uid: 4_000_000,
            gid: 4_000_000,
            home: PathBuf::from("/nonexistent"),
        };

        let open = reachable_by(&closed, &stranger).unwrap();
        let shut = reachable_by(&closed.join("inner"), &stranger).unwrap();

        let _ = fs::remove_dir_all(&root);
        assert!(open, "only the folders above a path count");
        assert!(!shut);
    }
}
