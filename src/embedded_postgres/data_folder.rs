//! The cluster's data folder: where its files live, and creating the cluster there with
//! initdb.
//!
//! When we are root, the server runs as an unprivileged user, who may be unable to reach the
//! configured folder (a project cloned under root's home, mode 700). Then the files live in a
//! folder of that user's own instead: under its home when it has one (`orders-postgres`'s:
//! `/var/lib/orders-postgres/orders-clusters/`), else under `/var/tmp/orders-clusters/`, named by a
//! hash of the configured folder's canonical path, with a symlink in the configured place
//! pointing there. Every later start follows that link.
//!
//! Never removes a folder that holds anything but an unfinished initdb of ours, and never
//! follows a name in a shared folder (`/var/tmp`) that someone else made.

use std::{
    fs, io,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use super::{
    Durability, EmbeddedError, SUPERUSER, binaries::Binaries, io_error, process::run_to_completion,
    server_user::RunAs,
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
            let mut file = create_replacing(&note, None)?;
            io::Write::write_all(&mut file, format!("{}\n", configured.display()).as_bytes())
                .map_err(io_error(&note))?;
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
    // Its own home survives reboots and no temp-file cleaner empties it; a user without one
    // (made by hand with no home, or whose home is someone else's) gets /var/tmp, which at
    // least survives reboots.
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
    let created = match fs::create_dir(base) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => false,
        Err(error) => return Err(io_error(base)(error)),
    };
    let foreign = || EmbeddedError::ForeignFolder {
        path: base.to_owned(),
        uid: user.uid,
    };
    // Opened without following a symlink, and changed only through that descriptor: the name
    // may be swapped meanwhile, the open folder cannot.
    let folder = open_folder(base).map_err(|_| foreign())?;
    let metadata = folder.metadata().map_err(io_error(base))?;
    if created && metadata.uid() == nix::unistd::Uid::effective().as_raw() {
        std::os::unix::fs::fchown(&folder, Some(user.uid), Some(user.gid))
            .map_err(io_error(base))?;
        folder
            .set_permissions(fs::Permissions::from_mode(0o700))
            .map_err(io_error(base))?;
    } else if metadata.uid() != user.uid || metadata.mode() & 0o077 != 0 {
        // Open to others, anyone could have put names of their own in it by now.
        return Err(foreign());
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
    // Whatever an earlier, interrupted initdb left there goes; a symlink is removed itself,
    // never what it points to (neither call follows one).
    match fs::symlink_metadata(&staging) {
        Ok(entry) if entry.is_dir() => {
            fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
        }
        Ok(_) => fs::remove_file(&staging).map_err(io_error(&staging))?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&staging)(error)),
    }
    prepare_owned_folder(&staging, run_as)?;
    let mut initdb = binaries.command("initdb");
    // Trust only until the cluster is given its password, before its server first starts
    // (see `password`): initdb would need the password in a file the server user can read,
    // and the same step must upgrade clusters made by older versions with trust alone.
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

/// Fails, saying what to do, when the cluster in `data_dir` belongs to another user than the
/// one its server runs as (PostgreSQL would only say "wrong ownership"): most likely one that
/// an older version ran as a user other processes share (`postgres`, `nobody`). Its files are
/// not given away here: anyone running as that user may have planted links among them to
/// files of root's, which a chown of every file as root would give away too; an operator who
/// has looked at them gives them away.
pub(super) fn check_owner(data_dir: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    let metadata = fs::metadata(data_dir).map_err(io_error(data_dir))?;
    let (uid, user) = match run_as {
        Some(user) => (user.uid, user.name.clone()),
        None => {
            let uid = nix::unistd::Uid::effective().as_raw();
            (uid, user_name(uid))
        }
    };
    if metadata.uid() == uid {
        return Ok(());
    }
    Err(EmbeddedError::ForeignCluster {
        path: data_dir.to_owned(),
        owner: user_name(metadata.uid()),
        user,
    })
}

/// The name of the user `uid`, or the number when it has none.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |user| user.name)
}

/// Creates `dir` for the server: reachable by the user it runs as, owned by it, and closed to
/// everyone else, as PostgreSQL insists. Its parent must exist.
///
/// The parent may be a folder of the server user's, who could swap `dir` for a symlink at any
/// moment: so `dir` is made with `mkdir` (which never follows a symlink) and its owner and
/// mode are changed through a descriptor opened without following one, never by path.
fn prepare_owned_folder(dir: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    fs::create_dir(dir).map_err(io_error(dir))?;
    let folder = open_folder(dir)?;
    if let Some(user) = run_as {
        check_reachable(dir, user)?;
        // Only the folder we just made: another one put in its place is not ours to give away.
        let metadata = folder.metadata().map_err(io_error(dir))?;
        if metadata.uid() != nix::unistd::Uid::effective().as_raw() {
            return Err(EmbeddedError::ForeignFolder {
                path: dir.to_owned(),
                uid: user.uid,
            });
        }
        std::os::unix::fs::fchown(&folder, Some(user.uid), Some(user.gid))
            .map_err(io_error(dir))?;
    }
    folder
        .set_permissions(fs::Permissions::from_mode(0o700))
        .map_err(io_error(dir))
}

/// Opens the folder `dir` itself, failing (ELOOP or ENOTDIR) if it is a symlink or no folder.
fn open_folder(dir: &Path) -> Result<fs::File, EmbeddedError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .map_err(io_error(dir))
}

/// Creates `path` as a new, empty file for writing, mode 0600, owned by `owner` when given,
/// in place of whatever was there. Only the server user (and root) may read it: what we write
/// in the data folder (the server's log, its password) is for no one else.
///
/// `path` may be in a folder the server user can write to. Opening it as it is would let that
/// user point it, through a symlink or a hard link, at any file root may write (`/etc/shadow`),
/// and root would truncate that file and give it away. So the name is unlinked first (which
/// removes a symlink itself, not its target) and the file is made anew with `O_EXCL` and
/// `O_NOFOLLOW`: if something takes the name again in between, the open fails instead of
/// following it. The owner is changed through the open file, not by path.
pub(super) fn create_replacing(
    path: &Path,
    owner: Option<&RunAs>,
) -> Result<fs::File, EmbeddedError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(path)(error)),
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error(path))?;
    if let Some(user) = owner {
        std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid)).map_err(io_error(path))?;
    }
    Ok(file)
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
            name: "stranger".to_owned(),
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

    /// A scratch folder, removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("orders-data-folder-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A user other than us; giving files to it takes root, so elsewhere files stay ours.
    fn stranger() -> Option<RunAs> {
        nix::unistd::Uid::effective().is_root().then(|| RunAs {
            name: "stranger".to_owned(),
            uid: 4_000_000,
            gid: 4_000_000,
            home: PathBuf::from("/nonexistent"),
        })
    }

    #[test]
    fn a_symlink_planted_where_a_file_is_created_is_replaced_and_its_target_left_alone() {
        let scratch = Scratch::new("planted-file");
        let target = scratch.0.join("shadow");
        fs::write(&target, "secret\n").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let before = fs::metadata(&target).unwrap();
        let log = scratch.0.join("server.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        let user = stranger();

        create_replacing(&log, user.as_ref()).unwrap();

        let after = fs::metadata(&target).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "secret\n");
        assert_eq!((after.uid(), after.mode()), (before.uid(), before.mode()));
        let created = fs::symlink_metadata(&log).unwrap();
        assert!(created.is_file(), "the link was not replaced by a file");
        if let Some(user) = user {
            assert_eq!(created.uid(), user.uid);
        }
    }

    #[test]
    fn a_symlink_planted_where_the_staging_folder_goes_is_never_followed() {
        let scratch = Scratch::new("planted-folder");
        let target = scratch.0.join("elsewhere");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let before = fs::metadata(&target).unwrap();
        let staging = scratch.0.join(".cluster.initdb");
        std::os::unix::fs::symlink(&target, &staging).unwrap();

        // As `initialise` would meet it: mkdir refuses the name a symlink holds.
        let outcome = prepare_owned_folder(&staging, stranger().as_ref());

        let after = fs::metadata(&target).unwrap();
        assert!(outcome.is_err(), "{outcome:?}");
        assert_eq!((after.uid(), after.mode()), (before.uid(), before.mode()));
    }

    #[test]
    fn a_relocation_folder_open_to_other_users_is_refused() {
        let Some(user) = stranger() else { return };
        let scratch = Scratch::new("open-base");
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o755)).unwrap();
        let base = scratch.0.join("orders-clusters");
        fs::create_dir(&base).unwrap();
        std::os::unix::fs::chown(&base, Some(user.uid), Some(user.gid)).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();

        let open = prepare_relocation(&base.join("cluster"), &user);
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).unwrap();
        let closed = prepare_relocation(&base.join("cluster"), &user);

        assert!(
            matches!(open, Err(EmbeddedError::ForeignFolder { .. })),
            "{open:?}"
        );
        assert_eq!(closed.unwrap(), base.join("cluster"));
    }

    #[test]
    fn a_relocation_folder_made_here_belongs_to_the_server_user_and_is_closed() {
        let Some(user) = stranger() else { return };
        let scratch = Scratch::new("new-base");
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o755)).unwrap();
        let base = scratch.0.join("orders-clusters");

        prepare_relocation(&base.join("cluster"), &user).unwrap();

        let metadata = fs::symlink_metadata(&base).unwrap();
        assert!(metadata.is_dir());
        assert_eq!((metadata.uid(), metadata.mode() & 0o777), (user.uid, 0o700));
    }
}
