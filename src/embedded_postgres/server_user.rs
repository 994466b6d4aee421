//! The operating-system user the server runs as when we are root: `orders-postgres`, a system
//! user of the cluster's alone, created here the first time it is needed.
//!
//! PostgreSQL refuses to run as root, so as root the server must run as someone else; and
//! whoever else runs as that user can read the cluster's files, so it must be a user no other
//! process shares. Not `postgres`, which a machine's own PostgreSQL runs as, and never
//! `nobody`, which every sandboxed daemon runs as. Started by any other user, the server runs
//! as that user, who owns the service's files already.
//!
//! Nothing here knows where the cluster's files are or how the server is started.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::unistd::{Uid, User};

use super::{EmbeddedError, io_error};

/// The name of the user the server runs as when we are root.
pub const SERVER_USER: &str = "orders-postgres";

/// Where that user's home is made when it is created here: where clusters that user cannot
/// reach in their configured folder are kept instead (see `data_folder`).
const SERVER_USER_HOME: &str = "/var/lib/orders-postgres";

/// The unprivileged user the server runs as, when we are root.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) home: PathBuf,
}

impl From<User> for RunAs {
    fn from(user: User) -> Self {
        Self {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        }
    }
}

/// Who the server must run as: nobody in particular unless we are root; as root,
/// [`SERVER_USER`], created first if it does not exist.
pub(super) fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = match look_up(SERVER_USER)? {
        Some(user) => user,
        None => create_server_user()?,
    };
    let nobody = look_up("nobody")?.map(|nobody| nobody.uid);
    check_dedicated(&user, nobody).map(Some)
}

/// Refuses a user that is not the cluster's alone: root under another name, or `nobody`'s
/// uid under another name (the uid is what the kernel and the files know, not the name).
fn check_dedicated(user: &RunAs, nobody_uid: Option<u32>) -> Result<RunAs, EmbeddedError> {
    if user.uid == 0 || Some(user.uid) == nobody_uid {
        return Err(EmbeddedError::SharedServerUser {
            name: user.name.clone(),
            uid: user.uid,
        });
    }
    Ok(user.clone())
}

fn look_up(name: &str) -> Result<Option<RunAs>, EmbeddedError> {
    User::from_name(name)
        .map(|user| user.map(RunAs::from))
        .map_err(|errno| EmbeddedError::NoServerUser {
            detail: format!("looking up the user {name} failed: {errno}"),
        })
}

/// How long to keep trying `useradd` while another process holds the user database's lock.
const USER_DATABASE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Creates [`SERVER_USER`] as a system user with no password and no login shell, in a group of
/// its own, with a home only it may enter, and returns it.
///
/// Several clusters may start at once (the tests start many), and `useradd` fails at once
/// while another one holds the lock on `/etc/passwd`: so this process creates the user once at
/// a time, and tries again while another process holds the lock, or finds the user that
/// process made.
fn create_server_user() -> Result<RunAs, EmbeddedError> {
    static CREATING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = CREATING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    loop {
        if let Some(user) = look_up(SERVER_USER)? {
            return Ok(user);
        }
        let output = useradd_command()
            .stdin(Stdio::null())
            .output()
            .map_err(|error| EmbeddedError::NoServerUser {
                detail: format!("running useradd failed: {error}"),
            })?;
        // useradd's exit codes: 9, the name is taken (by a process that just made it, found
        // on the next look; or by a group of that name, which no retry mends, hence the
        // deadline); 10, the user database is locked (by another process making a user).
        match output.status.code() {
            Some(0) => {
                let user = look_up(SERVER_USER)?.ok_or_else(|| EmbeddedError::NoServerUser {
                    detail: "useradd succeeded, but the user cannot be found".to_owned(),
                })?;
                make_home(&user)?;
                tracing::warn!(
                    user = SERVER_USER,
                    uid = user.uid,
                    home = SERVER_USER_HOME,
                    "created the system user {SERVER_USER} to run the private PostgreSQL cluster as"
                );
                return Ok(user);
            }
            Some(9 | 10) if started.elapsed() < USER_DATABASE_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => {
                return Err(EmbeddedError::NoServerUser {
                    detail: format!(
                        "useradd exited with {}: {}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                });
            }
        }
    }
}

fn useradd_command() -> Command {
    let shell = ["/usr/sbin/nologin", "/sbin/nologin"]
        .into_iter()
        .find(|shell| Path::new(shell).exists())
        .unwrap_or("/bin/false");
    let mut useradd = Command::new("useradd");
    // The home is made by `make_home`: useradd would fill it with a login's dotfiles.
    useradd
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--home-dir", SERVER_USER_HOME, "--shell", shell])
        .args([
            "--comment",
            "private PostgreSQL cluster of the orders service",
        ])
        .arg(SERVER_USER);
    useradd
}

/// Makes the new user's home, closed to everyone else. One that exists already is left as it
/// is: should it be someone else's, relocated clusters go elsewhere (see `data_folder`).
fn make_home(user: &RunAs) -> Result<(), EmbeddedError> {
    let home = Path::new(SERVER_USER_HOME);
    match fs::create_dir(home) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(io_error(home)(error)),
    }
    std::os::unix::fs::chown(home, Some(user.uid), Some(user.gid)).map_err(io_error(home))?;
    fs::set_permissions(home, fs::Permissions::from_mode(0o700)).map_err(io_error(home))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: u32) -> RunAs {
        RunAs {
            name: name.to_owned(),
            uid,
            gid: uid,
            home: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn a_server_user_with_nobody_s_uid_or_root_s_is_refused() {
        let as_nobody = check_dedicated(&user(SERVER_USER, 65534), Some(65534));
        let as_root = check_dedicated(&user(SERVER_USER, 0), Some(65534));
        let dedicated = check_dedicated(&user(SERVER_USER, 998), Some(65534));

        for refused in [as_nobody, as_root] {
            let message = refused.unwrap_err().to_string();
            assert!(message.contains("no other process shares"), "{message}");
        }
        assert_eq!(dedicated.unwrap().uid, 998);
    }

    #[test]
    fn as_root_the_server_runs_as_a_user_of_its_own_which_exists_once_asked_for() {
        let Some(user) = run_as().unwrap() else {
            assert!(!Uid::effective().is_root());
            return;
        };

        assert_eq!(user.name, SERVER_USER);
        let nobody = User::from_name("nobody").unwrap().map(|nobody| nobody.uid);
        let postgres = User::from_name("postgres")
            .unwrap()
            .map(|postgres| postgres.uid);
        assert_ne!(Some(Uid::from_raw(user.uid)), nobody);
        assert_ne!(Some(Uid::from_raw(user.uid)), postgres);
        assert_ne!(user.uid, 0);
        assert_eq!(
            User::from_uid(Uid::from_raw(user.uid))
                .unwrap()
                .unwrap()
                .name,
            SERVER_USER
        );
    }
}
