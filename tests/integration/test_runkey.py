"""fma-runkey (tools/runkey): the run's own copy of its signing key, checked with the real cosign.

The copy is the same private key (what it signs verifies with the key's cosign.pub), opened by cosign
with the copy's password at the lowest scrypt cost cosign accepts; the public half it prints is the
text ``cosign public-key`` prints; a key that does not open is one line naming the fix, and no copy is
written; an existing file is never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from tasks.core import tools
from tasks.core.errors import SigningError
from tasks.core.project import PROJECT_ROOT
from tasks.run.facts import KEY_VARIABLE, SigningKey
from tasks.supplychain import runkey
from tests.integration.shared import key_pair

pytestmark = pytest.mark.integration

PASSWORD = "runkey-test-pw"


def cosign(*args: str, password: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tools.tool("cosign"), *args], capture_output=True, text=True, timeout=120, check=False,
                          cwd=cwd, env={**os.environ, "COSIGN_PASSWORD": password})


def kdf(path: Path) -> dict[str, object]:
    body = "".join(line for line in path.read_text().splitlines() if not line.startswith("-----"))
    params: dict[str, object] = json.loads(base64.b64decode(body))["kdf"]["params"]
    return params


def test_the_copy_is_the_same_key_opened_at_cosigns_lowest_cost(tmp_path: Path) -> None:
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    copy = runkey.run_copy(runkey.key_directory())
    try:
        public = runkey.write_run_copy(SigningKey(path=str(key), password=SecretStr(PASSWORD)), copy)
        copied = Path(copy.path)
        assert public == cosign("public-key", "--key", str(key), password=PASSWORD).stdout
        assert copied.stat().st_mode & 0o777 == 0o600 and copied.parent.stat().st_mode & 0o777 == 0o700
        assert kdf(key) == {"N": 65536, "r": 8, "p": 1}  # what cosign generate-key-pair writes
        assert kdf(copied) == {"N": 32768, "r": 8, "p": 1}
        run_password = copy.password.get_secret_value()
        assert len(run_password) >= 32 and run_password != PASSWORD
        assert cosign("public-key", "--key", copy.path, password=run_password).stdout == public
        # A signature made with the copy verifies with the key's own public half.
        blob = tmp_path / "blob.txt"
        blob.write_text("signed with the run's copy\n")
        signed = cosign("sign-blob", "--key", copy.path, "--tlog-upload=false", "--yes", "--output-signature",
                        str(tmp_path / "blob.sig"), str(blob), password=run_password)
        assert signed.returncode == 0, signed.stderr
        verified = cosign("verify-blob", "--key", str(pub), "--insecure-ignore-tlog=true", "--signature",
                          str(tmp_path / "blob.sig"), str(blob), password="")
        assert verified.returncode == 0, verified.stderr
        # The copy's password opens nothing else: the key itself stays closed to it.
        assert cosign("public-key", "--key", str(key), password=run_password).returncode != 0
    finally:
        runkey.remove_key_directory(Path(copy.path).parent)
    assert not Path(copy.path).parent.exists()


def test_a_key_held_in_a_variable_is_copied_as_a_file_one(tmp_path: Path) -> None:
    """A Secret block's key reaches fma-runkey as cosign's env:// reference: the same public half."""
    key, _ = key_pair(tmp_path / "keys", PASSWORD)
    held, filed = runkey.key_directory(), runkey.key_directory()
    try:
        block = SigningKey(pem=SecretStr(key.read_text()), password=SecretStr(PASSWORD))
        assert block.ref == f"env://{KEY_VARIABLE}"
        public = runkey.write_run_copy(block, runkey.run_copy(held))
        assert public == runkey.write_run_copy(SigningKey(path=str(key), password=SecretStr(PASSWORD)),
                                               runkey.run_copy(filed))
        assert [p.name for p in held.iterdir()] == ["cosign.key"]
    finally:
        runkey.remove_key_directory(held)
        runkey.remove_key_directory(filed)


@pytest.mark.parametrize("fault", ["wrong password", "not a key"])
def test_a_key_that_does_not_open_is_one_line_and_no_copy(tmp_path: Path, fault: str) -> None:
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    given = SigningKey(path=str(key), password=SecretStr("not-the-password")) if fault == "wrong password" \
        else SigningKey(path=str(pub), password=SecretStr(PASSWORD))
    directory = runkey.key_directory()
    try:
        with pytest.raises(SigningError) as raised:
            runkey.write_run_copy(given, runkey.run_copy(directory))
        text = str(raised.value)
        assert "\n" not in text and "not-the-password" not in text
        if fault == "wrong password":
            assert text == (f"cannot open the key file {key}: wrong password; set FMA_SIGNING_PASSWORD to the key's "
                            "password")
        else:
            assert text.startswith(f"cannot read the key file {pub} as a cosign private key: ")
        assert list(directory.iterdir()) == []
    finally:
        runkey.remove_key_directory(directory)


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    key, _ = key_pair(tmp_path / "keys", PASSWORD)
    directory = runkey.key_directory()
    try:
        copy = runkey.run_copy(directory)
        Path(copy.path).write_text("already here\n")
        with pytest.raises(SigningError) as raised:
            runkey.write_run_copy(SigningKey(path=str(key), password=SecretStr(PASSWORD)), copy)
        assert "file exists" in str(raised.value)
        assert Path(copy.path).read_text() == "already here\n"
    finally:
        runkey.remove_key_directory(directory)


def test_the_built_program_is_the_one_of_these_sources() -> None:
    """scripts/tools.sh stamps fma-runkey with a hash of tools/runkey: a changed source is built again."""
    source = PROJECT_ROOT / "tools" / "runkey"
    parts = [source / "go.mod", source / "go.sum", *sorted(source.glob("*.go"))]
    stamp = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()[:16]
    said = subprocess.run([tools.tool("fma-runkey"), "version"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.split()
    assert said == ["fma-runkey", stamp]
