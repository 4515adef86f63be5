"""The server's view of the key directory (``sandbox.keys.live.LiveKeys``): it follows a
rotation made by another process, at once for an unknown key id, and never makes keys of its
own after the first read."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from sandbox.errors import MasterKeyError
from sandbox.keys import directory as keystore
from sandbox.keys.live import RECHECK_S, LiveKeys
from sandbox.keys.master import MasterKeyRing


def live(key_dir: Path) -> LiveKeys:
    return LiveKeys(key_dir, master_key=None, hmac_key=None)


def test_an_unknown_master_key_id_reads_the_directory_again_at_once(tmp_path: Path) -> None:
    keys = live(tmp_path)
    held = keys.master.ring()
    other = keystore.rotate_master(tmp_path)  # another process: the CLI
    data_key = MasterKeyRing.new_data_key()
    kid, wrapped = other.wrap(data_key, "workspace\x00ds\x001")
    assert kid not in held.keys
    assert held.unwrap(kid, wrapped, "workspace\x00ds\x001") == data_key  # no waiting
    assert keys.master.ring().current_id == kid


def test_an_unknown_hmac_key_id_reads_the_directory_again_at_once(tmp_path: Path) -> None:
    keys = live(tmp_path)
    held = keys.audit.hmac
    rotated = keystore.rotate_audit_hmac(tmp_path)
    digest = b"\x01" * 32
    assert held.mac(rotated.current_id, digest) == rotated.mac(rotated.current_id, digest)
    assert held.mac("hk-nope", digest) is None


def test_every_ring_follows_a_rotation_within_the_recheck_interval(tmp_path: Path) -> None:
    keys = live(tmp_path)
    receipt, audit = keystore.rotate(tmp_path), keystore.rotate_audit_signing(tmp_path)
    master, hmac = keystore.rotate_master(tmp_path), keystore.rotate_audit_hmac(tmp_path)
    time.sleep(RECHECK_S + 0.1)
    assert keys.receipt.ring().current_id == receipt.current_id
    assert keys.audit_signing.ring().current_id == audit.current_id
    assert keys.audit.signing.current_id == audit.current_id
    assert keys.master.ring().current_id == master.current_id
    assert keys.audit.master.current_id == master.current_id
    assert keys.audit.hmac.current_id == hmac.current_id
    assert len(keys.receipt.ring().retired) == 1  # the old key stays published


def test_a_key_gone_missing_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    keys = live(tmp_path)
    before = keys.master.ring().current_id
    shutil.rmtree(tmp_path / "master")
    time.sleep(RECHECK_S + 0.1)
    assert keys.master.ring().current_id == before  # the rings held are kept
    assert not (tmp_path / "master").exists()  # and no key was made
    with pytest.raises(MasterKeyError, match="not in the ring"):
        keys.master.ring().unwrap("mk-gone", b"\x00" * 60, "workspace\x00ds\x001")
