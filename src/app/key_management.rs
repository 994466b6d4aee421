//! Managing API keys: what `orders keys` does, and the private cluster's `local` key.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use deadpool_postgres::Pool;

use super::authentication::{IssuedSecret, hash_secret};
use crate::{
    domain::{KeyName, KeyRecord, LOCAL_KEY_NAME, RateLimit, Revoked, Scope},
    storage::{self, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("a key named {0:?} exists already (names of revoked keys are not reused)")]
    NameTaken(String),
    #[error("no key is named {0:?}")]
    NoSuchKey(String),
    #[error("could not write the API key file {}", .0.display())]
    KeyFile(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a key with `scopes` and returns its secret: the only time anyone sees it. The
/// instance's default rate limit, if any, applies to it.
pub async fn create(pool: &Pool, name: &KeyName, scopes: &[Scope]) -> Result<String, KeysError> {
    create_with_rate(pool, name, scopes, None).await
}

/// Like [`create`], with the key's own rate limit when `rate` is given: it then applies
/// instead of the instance's default.
pub async fn create_with_rate(
    pool: &Pool,
    name: &KeyName,
    scopes: &[Scope],
    rate: Option<RateLimit>,
) -> Result<String, KeysError> {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let issued = IssuedSecret::generate();
    match storage::api_keys::insert(pool, name, &scopes, rate, issued.stored()).await {
        Ok(()) => Ok(issued.secret),
        Err(StoreError::KeyNameTaken) => Err(KeysError::NameTaken(name.to_string())),
        Err(error) => Err(error.into()),
    }
}

pub async fn list(pool: &Pool) -> Result<Vec<KeyRecord>, KeysError> {
    Ok(storage::api_keys::list(pool).await?)
}

pub async fn revoke(pool: &Pool, name: &str) -> Result<Revoked, KeysError> {
    match storage::api_keys::revoke(pool, name).await {
        Err(StoreError::NotFound) => Err(KeysError::NoSuchKey(name.to_owned())),
        outcome => Ok(outcome?),
    }
}

/// The file in the private cluster's data folder that holds the `local` key's secret.
pub fn local_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("api-key")
}

/// What [`ensure_local_key`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKey {
    /// The file holds the secret of the unrevoked `local` key.
    Reused,
    /// There was no `local` key: it was created, and its secret written to the file.
    Created,
    /// The file was missing or held another secret: `local` got a new one, written to it.
    Reissued,
    /// `local` was revoked; it is left so, and the file, if any, works no more.
    Revoked,
}

/// Makes sure the file `api-key` in `data_dir` holds the secret of an unrevoked key named
/// `local` with every scope, unless someone revoked that key. For the private cluster, so that
/// its one-command start gives a key to call it with.
///
/// The secret is written to a temporary file (mode 0600) before the database learns it, and
/// the file is renamed into place after: a start that is interrupted leaves either the old
/// state or the new one, and the next start repairs either.
pub async fn ensure_local_key(pool: &Pool, data_dir: &Path) -> Result<LocalKey, KeysError> {
    let path = local_key_file(data_dir);
    let name = KeyName::parse(LOCAL_KEY_NAME).expect("the local key's name is valid");
    if let Ok(secret) = fs::read_to_string(&path)
        && storage::api_keys::has_secret(pool, name.as_str(), &hash_secret(secret.trim())).await?
    {
        return Ok(LocalKey::Reused);
    }
    let existing = storage::api_keys::revoked(pool, name.as_str()).await?;
    if existing == Some(true) {
        return Ok(LocalKey::Revoked);
    }
    let issued = IssuedSecret::generate();
    let staged = path.with_extension("new");
    write_private_file(&staged, &issued.secret)
        .map_err(|error| KeysError::KeyFile(staged.clone(), error))?;
    let outcome = match existing {
        None => storage::api_keys::insert(pool, &name, &Scope::ALL, None, issued.stored())
            .await
            .map(|()| LocalKey::Created),
        Some(_) => storage::api_keys::replace_secret(pool, &name, issued.stored())
            .await
            .map(|()| LocalKey::Reissued),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            let _ = fs::remove_file(&staged);
            return Err(error.into());
        }
    };
    fs::rename(&staged, &path).map_err(|error| KeysError::KeyFile(path.clone(), error))?;
    Ok(outcome)
}

/// Writes `secret` and a newline to a new file only its owner can read.
fn write_private_file(path: &Path, secret: &str) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}
