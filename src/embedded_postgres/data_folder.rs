//! The cluster's data folder: checking that the server user can reach it, and creating the
//! cluster in it with initdb.
//!
//! Never removes a folder that holds anything but an unfinished initdb of ours.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::{
    Durability, EmbeddedError, SUPERUSER,
    binaries::Binaries,
    io_error,
    process::{RunAs, run_to_completion},
};

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

/// Fails early, with a message that says what to do, when `user` cannot walk down to `dir`
/// (a project checked out under root's closed home folder, say); initdb would fail later with
/// a bare "permission denied".
fn check_reachable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let metadata = fs::metadata(ancestor).map_err(io_error(ancestor))?;
        let mode = metadata.mode();
        let searchable = mode & 0o001 != 0
            || (metadata.uid() == user.uid && mode & 0o100 != 0)
            || (metadata.gid() == user.gid && mode & 0o010 != 0);
        if !searchable {
            return Err(EmbeddedError::Unreachable {
                path: dir.to_owned(),
                uid: user.uid,
            });
        }
    }
    Ok(())
}

pub(super) fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(io_error(path))
}
