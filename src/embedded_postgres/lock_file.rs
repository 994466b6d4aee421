//! Recovery from a server that was killed: its lock file, `postmaster.pid`, stays behind.
//!
//! PostgreSQL would refuse to start while the file names a live process (after a reboot, an
//! unrelated one may have that pid): only then is the file removed. One whose pid is dead is
//! left to PostgreSQL, which treats it as stale itself and, through it, finds its old shared
//! memory and refuses to start while orphaned backends are still attached to it. A file that
//! names a live server working in this folder must never be removed: that server is really
//! running, and without the file a second one could start on its data. (Our readiness check
//! compares pids, so a stale file's "ready" is never taken for the new server's.)

use std::{fs, path::Path};

use nix::{errno::Errno, sys::signal, unistd::Pid};

use super::{EmbeddedError, io_error};

/// Removes `data_dir`'s `postmaster.pid` if it names a live process that is no server of this
/// folder; fails, touching nothing, if it names a live process that works in `data_dir` (most
/// likely a server still running); leaves it to PostgreSQL if its process is gone.
pub(super) fn clear_stale_lock_file(data_dir: &Path) -> Result<(), EmbeddedError> {
    let lock_file = data_dir.join("postmaster.pid");
    let Ok(contents) = fs::read_to_string(&lock_file) else {
        return Ok(());
    };
    let owner = contents
        .lines()
        .next()
        .and_then(|line| line.trim().parse::<i32>().ok())
        // 0 and negative numbers would name process groups, not a process.
        .filter(|pid| *pid > 0)
        .map(Pid::from_raw);
    match owner {
        // `kill(pid, None)` only asks whether the process exists (EPERM: it does, not ours).
        Some(pid) if signal::kill(pid, None) == Err(Errno::ESRCH) => Ok(()),
        Some(pid) if works_in(pid, data_dir) => Err(EmbeddedError::AlreadyRunning {
            lock_file,
            pid: pid.as_raw(),
        }),
        _ => fs::remove_file(&lock_file).map_err(io_error(&lock_file)),
    }
}

/// Whether the live process `pid` works in `data_dir`, as far as this machine can tell;
/// when in doubt, yes: a lock file kept wrongly only makes PostgreSQL refuse to start, one
/// removed wrongly lets a second server loose on a live one's data.
fn works_in(pid: Pid, data_dir: &Path) -> bool {
    // Not us: the file is from before a restart that gave us the old server's pid.
    if pid == nix::unistd::getpid() {
        return false;
    }
    // Where /proc exists (Linux), a live process counts only if it works in this folder. The
    // kernel names its working folder with every symlink resolved, so compare canonical paths:
    // the folder we were given may be reached through a link (macOS's /tmp is one, to
    // /private/tmp), and then the two spellings differ for the very same folder.
    let Ok(cwd) = fs::canonicalize(format!("/proc/{pid}/cwd")) else {
        // No /proc, or not ours to look at: PostgreSQL checks the pid itself on start.
        return true;
    };
    fs::canonicalize(data_dir).is_ok_and(|data_dir| data_dir == cwd)
}

#[cfg(test)]
mod tests {
    use std::{
        path::PathBuf,
        process::{Child, Command},
    };

    use super::*;

    /// A scratch folder holding `cluster/`, the folder a stand-in server works in, and `link`,
    /// a symlink to it.
    struct Scene {
        root: PathBuf,
        cluster: PathBuf,
        link: PathBuf,
    }

    impl Scene {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("orders-lock-file-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            let cluster = root.join("cluster");
            fs::create_dir_all(&cluster).unwrap();
            let link = root.join("link");
            std::os::unix::fs::symlink(&cluster, &link).unwrap();
            Self {
                root,
                cluster,
                link,
            }
        }

        /// A live process working in `dir`, named by the cluster's lock file as a server's
        /// pid is.
        fn live_process_named_by_the_lock_file(&self, dir: &Path) -> Child {
            let process = Command::new("sleep")
                .arg("30")
                .current_dir(dir)
                .spawn()
                .unwrap();
            fs::write(
                self.lock_file(),
                format!("{}\n{}\n", process.id(), dir.display()),
            )
            .unwrap();
            process
        }

        fn lock_file(&self) -> PathBuf {
            self.cluster.join("postmaster.pid")
        }
    }

    impl Drop for Scene {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn end(mut process: Child) {
        let _ = process.kill();
        let _ = process.wait();
    }

    #[test]
    fn a_live_servers_lock_file_is_kept_when_its_folder_is_reached_through_a_symlink() {
        let scene = Scene::new("symlink");
        let server = scene.live_process_named_by_the_lock_file(&scene.cluster);

        let outcome = clear_stale_lock_file(&scene.link);

        let kept = scene.lock_file().exists();
        end(server);
        assert!(kept, "the lock file of a live server was removed");
        assert!(
            matches!(outcome, Err(EmbeddedError::AlreadyRunning { .. })),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_lock_file_naming_a_process_that_has_exited_is_left_to_postgresql() {
        let scene = Scene::new("exited");
        let mut process = Command::new("true").spawn().unwrap();
        process.wait().unwrap();
        fs::write(scene.lock_file(), format!("{}\n", process.id())).unwrap();

        clear_stale_lock_file(&scene.link).unwrap();

        // PostgreSQL checks its shared memory through it, for backends still attached.
        assert!(scene.lock_file().exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_file_naming_a_live_process_working_elsewhere_is_removed() {
        // As after a reboot, when the pid went to an unrelated process.
        let scene = Scene::new("elsewhere");
        let unrelated = scene.live_process_named_by_the_lock_file(&scene.root);

        let outcome = clear_stale_lock_file(&scene.cluster);

        let removed = !scene.lock_file().exists();
        end(unrelated);
        assert!(removed, "the lock file of a stale server was kept");
        outcome.unwrap();
    }

    #[test]
    fn a_lock_file_naming_this_very_process_is_removed() {
        // As when a restart gave this process the pid the killed server had.
        let scene = Scene::new("ours");
        fs::write(scene.lock_file(), format!("{}\n", std::process::id())).unwrap();

        clear_stale_lock_file(&scene.cluster).unwrap();

        assert!(!scene.lock_file().exists());
    }
}
