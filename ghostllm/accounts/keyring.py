"""Where the encryption key for secrets at rest comes from.

`GHOSTLLM_ENCRYPTION_KEY` (base64 of 32 bytes) when set. Otherwise, on the embedded
SQLite store only, a generated key file `<server.data_dir>/encryption.key`, created with
mode 0600; a key file that group or others may access is refused (never chmod-ed: an
existing file's mode is the operator's). A PostgreSQL store needs the environment
variable: every replica must share one key.

Keys an unfinished rotation left (`GHOSTLLM_NEW_ENCRYPTION_KEY`; `encryption.key.new`,
`encryption.key.old`) are loaded too, for decrypting only, so no secret becomes
unreadable if `ghostllm secrets rotate` is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ghostllm.accounts.cipher import EncryptionKey, SecretCipher
from ghostllm.config import Config
from ghostllm.errors import ConfigError

ENV_KEY = "GHOSTLLM_ENCRYPTION_KEY"
ENV_NEW_KEY = "GHOSTLLM_NEW_ENCRYPTION_KEY"
KEY_FILE = "encryption.key"


def key_file_path(config: Config) -> Path:
    return Path(config.server.data_dir) / KEY_FILE


def sibling(path: Path, suffix: str) -> Path:
    """`encryption.key.old`, `encryption.key.new`."""
    return path.with_name(f"{path.name}.{suffix}")


def uses_key_file(config: Config, env: Mapping[str, str]) -> bool:
    return not env.get(ENV_KEY) and config.store.is_sqlite


def env_key(env: Mapping[str, str], name: str = ENV_KEY) -> EncryptionKey | None:
    text = env.get(name)
    return EncryptionKey.from_base64(text, source=name) if text else None


def read_key_file(path: Path) -> EncryptionKey:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ConfigError(f"no encryption key file at {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the encryption key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"the encryption key file {path} is not a regular file")
        if mode & 0o077:
            raise ConfigError(
                f"the encryption key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
                f" it must be 0600 or stricter: chmod 600 {path}"
            )
        text = f.read(1024).decode("ascii", errors="replace")
    return EncryptionKey.from_base64(text, source=f"the encryption key file {path}")


def create_key_file(path: Path) -> EncryptionKey:
    """A new random key in a new file, mode 0600; the existing key if the file is there already."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = EncryptionKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path)
    try:
        os.write(fd, (key.to_base64() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    _sync_dir(path.parent)
    return key


def write_key_file(path: Path, key: EncryptionKey) -> None:
    """Write (or replace) the key file atomically: a 0600 temporary file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (key.to_base64() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_cipher(config: Config, env: Mapping[str, str] | None = None, *, create: bool = False) -> SecretCipher:
    """The cipher for stored secrets. `create`: make the key file if there is none (a
    command about to encrypt); otherwise a missing key file is an error."""
    env = os.environ if env is None else env
    primary = env_key(env)
    if primary is not None:
        extra = env_key(env, ENV_NEW_KEY)
        return SecretCipher(primary, decrypt_only=() if extra is None else (extra,))
    if not config.store.is_sqlite:
        raise ConfigError(
            f"{ENV_KEY} is required with a PostgreSQL store (every replica must share the key):"
            " set it to base64 of 32 random bytes (openssl rand -base64 32)"
        )
    path = key_file_path(config)
    key = create_key_file(path) if create else read_key_file(path)
    leftovers = [read_key_file(p) for p in (sibling(path, "old"), sibling(path, "new")) if p.exists()]
    return SecretCipher(key, decrypt_only=leftovers)
