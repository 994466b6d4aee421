//! The superuser's password, which every connection to the cluster must give: the socket alone
//! is not enough, whoever can reach it.
//!
//! It is drawn from the operating system's randomness when a cluster has none (just made by
//! initdb, or made by an older version with trust authentication: such a cluster is upgraded
//! in place), set in the cluster while no server runs (PostgreSQL's single-user mode, which
//! listens on nothing), required by a `pg_hba.conf` of ours for every local and TCP
//! connection (`scram-sha-256`), and kept in [`PASSWORD_FILE`] in the data folder, mode 0600,
//! the server user's.
//!
//! Only its SCRAM verifier is sent to the server: the password itself never reaches
//! PostgreSQL, its log, or a command line.

use std::{fs, io::Write, path::Path, process::Stdio};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{TryRngCore, rngs::OsRng};

use super::{
    Durability, EmbeddedError, SUPERUSER, admin::quote_identifier, binaries::Binaries,
    data_folder::create_replacing, io_error, process::spawn_owned, server_user::RunAs,
};

/// The file in the data folder that holds the superuser's password, on one line.
pub const PASSWORD_FILE: &str = "orders-superuser-password";

/// Every connection, on the socket or over TCP (when a test turns TCP on), for any database
/// and for replication, must prove it knows the password.
const PG_HBA: &str = "\
# Written by the orders service. Every connection must give the superuser's password, which
# is kept in orders-superuser-password beside this file.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
";

/// Bytes of randomness in a password: 256 bits, written as 43 URL-safe base64 characters,
/// which need no quoting in a connection string or a URL.
const PASSWORD_BYTES: usize = 32;

/// Whether the cluster in `data_dir` has its password (else it must be given one before its
/// server starts).
pub(super) fn has_password(data_dir: &Path) -> bool {
    data_dir.join(PASSWORD_FILE).is_file()
}

/// The superuser's password of the cluster in `data_dir`.
pub(super) fn read_password(data_dir: &Path) -> Result<String, EmbeddedError> {
    let path = data_dir.join(PASSWORD_FILE);
    let contents = fs::read_to_string(&path).map_err(io_error(&path))?;
    Ok(contents.trim_end().to_owned())
}

/// Gives the stopped cluster in `data_dir` a new password, required from then on.
///
/// The steps are ordered so that an interruption anywhere is redone whole by the next start:
/// the password file, written last, is what says it is done.
pub(super) fn require_password(
    binaries: &Binaries,
    data_dir: &Path,
    durability: Durability,
    run_as: Option<&RunAs>,
) -> Result<(), EmbeddedError> {
    let password = generate()?;
    set_superuser_verifier(binaries, data_dir, durability, run_as, &password)?;
    write_replacing(&data_dir.join("pg_hba.conf"), PG_HBA, run_as)?;
    write_replacing(
        &data_dir.join(PASSWORD_FILE),
        &format!("{password}\n"),
        run_as,
    )
}

fn generate() -> Result<String, EmbeddedError> {
    let mut random = [0u8; PASSWORD_BYTES];
    OsRng
        .try_fill_bytes(&mut random)
        .map_err(|error| EmbeddedError::Command {
            step: "drawing the superuser's password from the operating system",
            detail: error.to_string(),
        })?;
    Ok(URL_SAFE_NO_PAD.encode(random))
}

/// Sets the superuser's password, as a SCRAM verifier made here, in PostgreSQL's single-user
/// mode: a server of one session, reading statements from its stdin, that accepts no
/// connection, so no one can come in while the cluster still trusts everyone.
fn set_superuser_verifier(
    binaries: &Binaries,
    data_dir: &Path,
    durability: Durability,
    run_as: Option<&RunAs>,
    password: &str,
) -> Result<(), EmbeddedError> {
    const STEP: &str = "setting the superuser's password (postgres --single)";
    let failed = |detail: String| EmbeddedError::Command { step: STEP, detail };
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let statement = format!(
        "ALTER ROLE {} PASSWORD '{verifier}'\n",
        quote_identifier(SUPERUSER)
    );
    let mut postgres = binaries.command("postgres");
    postgres
        .arg("--single")
        .arg("-D")
        .arg(data_dir)
        // Without it an error is reported and the session goes on, exiting with success.
        .args(["-c", "exit_on_error=on"]);
    if durability == Durability::Throwaway {
        postgres.args(["-c", "fsync=off"]);
    }
    postgres
        .arg(SUPERUSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        spawn_owned(&mut postgres, run_as).map_err(|error| failed(error.to_string()))?;
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(statement.as_bytes());
    // Waited for even if writing failed (the server exited early): its output says why.
    let output = child
        .wait_with_output()
        .map_err(|error| failed(error.to_string()))?;
    if output.status.success() && written.is_ok() {
        return Ok(());
    }
    // PostgreSQL repeats a failed statement after its error: not the password, but its
    // verifier, which is no one's business either.
    let errors: Vec<&str> = std::str::from_utf8(&output.stderr)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.contains("STATEMENT:"))
        .collect();
    Err(failed(format!(
        "exited with {}: {}",
        output.status,
        errors.join("\n").trim()
    )))
}

/// Replaces `path` with a file holding `contents`, mode 0600, owned by `owner` when given, in
/// one step: a file of that name is either the old one or the whole new one, never half
/// written.
fn write_replacing(
    path: &Path,
    contents: &str,
    owner: Option<&RunAs>,
) -> Result<(), EmbeddedError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let staging = path.with_file_name(format!(".{name}.new"));
    let mut file = create_replacing(&staging, owner)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&staging))?;
    // rename replaces whatever holds the name (a symlink included) and follows nothing.
    fs::rename(&staging, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_256_random_bits_that_need_no_quoting() {
        let first = generate().unwrap();
        let second = generate().unwrap();

        assert_ne!(first, second);
        assert_eq!(first.len(), 43);
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{first}"
        );
    }
}
