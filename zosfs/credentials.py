"""Where the access key and secret come from, and keeping the secret safe.

In this order: the `credentials=FILE` option (what the mount's own command
line or fstab line names wins, as s3fs's `passwd_file` does: credentials
left in a shell's environment for another account must not silently replace
it, nor let a file others can read pass unrefused); the `access_key` option
with a secret from the environment; the environment
(`ZOS_ACCESS_KEY_ID`/`ZOS_SECRET_ACCESS_KEY`, then
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`); then the default files `~/.passwd-zosfs`, `/etc/passwd-zosfs` and the AWS
shared credentials file. A file may be in s3fs's passwd format (`ACCESS:SECRET`,
or `BUCKET:ACCESS:SECRET` lines) or in the AWS INI format with profiles.

A credentials file that group or others may read is refused, as ssh refuses
such keys. The secret is never logged and never part of an error message.
"""

from __future__ import annotations

import configparser
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field


class CredentialsError(Exception):
    """One line for the user; never contains the secret."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""  # where they came from, for the log


def default_files(env: Mapping[str, str]) -> list[str]:
    home = env.get("HOME") or os.path.expanduser("~")
    aws = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    return [os.path.join(home, ".passwd-zosfs"), "/etc/passwd-zosfs", aws]


def resolve(access_key: str, credentials_file: str, profile: str, bucket: str, env: Mapping[str, str]) -> Credentials:
    """Find credentials (see the module docstring); raises CredentialsError."""
    if credentials_file:
        return read_file(credentials_file, profile, bucket, access_key)
    for ak_name, sk_name in (("ZOS_ACCESS_KEY_ID", "ZOS_SECRET_ACCESS_KEY"), ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")):
        if env.get(sk_name) and (access_key or env.get(ak_name)):
            return Credentials(access_key or env[ak_name], env[sk_name], env.get("AWS_SESSION_TOKEN"), f"environment ({sk_name})")
    for path in default_files(env):
        if os.path.exists(path):
            return read_file(path, profile, bucket, access_key)
    raise CredentialsError(
        "no credentials: use -o credentials=FILE (a file with ACCESS_KEY:SECRET_KEY, mode 600), "
        "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def read_file(path: str, profile: str, bucket: str, access_key: str = "") -> Credentials:
    try:
        st = os.stat(path)
    except OSError as err:
        raise CredentialsError(f"cannot read credentials file {path}: {err.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise CredentialsError(
            f"credentials file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):03o}); "
            f"run: chmod 600 {path}"
        )
    try:
        # (utf-8-sig: an editor's byte-order mark would otherwise become part
        # of the access key, and the server would reject a key that looks right)
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise CredentialsError(f"cannot read credentials file {path}: {getattr(err, 'strerror', None) or 'not text'}") from None
    if not text.strip():
        raise CredentialsError(f"credentials file {path} is empty: write ACCESS_KEY:SECRET_KEY into it")
    if text.lstrip().startswith("["):
        return _from_ini(text, path, profile)
    return _from_passwd(text, path, bucket, access_key)


def _from_passwd(text: str, path: str, bucket: str, access_key: str) -> Credentials:
    fallback: Credentials | None = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) == 2:
            creds = Credentials(parts[0].strip(), parts[1].strip(), source=path)
            if not access_key or creds.access_key == access_key:
                fallback = fallback or creds
        elif len(parts) == 3:
            if parts[0].strip() == bucket:
                return Credentials(parts[1].strip(), parts[2].strip(), source=path)
        else:
            raise CredentialsError(f"{path}, line {number}: expected ACCESS_KEY:SECRET_KEY or BUCKET:ACCESS_KEY:SECRET_KEY")
    if fallback is None:
        raise CredentialsError(f"{path} has no credentials for bucket {bucket!r}")
    return fallback


def _from_ini(text: str, path: str, profile: str) -> Credentials:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        raise CredentialsError(f"{path} is not a valid AWS credentials file") from None
    name = profile or "default"
    if not parser.has_section(name):
        raise CredentialsError(f"{path} has no profile [{name}]")
    section = parser[name]
    if "aws_access_key_id" not in section or "aws_secret_access_key" not in section:
        raise CredentialsError(f"{path} [{name}] needs aws_access_key_id and aws_secret_access_key")
    return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"], section.get("aws_session_token"), f"{path} [{name}]")
