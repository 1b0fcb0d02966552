#!/usr/bin/env python3
"""Independent check of kat.json against other implementations of the same primitives.

The vectors in kat.json are produced by crates/crypto/examples/gen_kat.rs; this script
recomputes every one of them from the format's specification with Python's `blake3` and
`cryptography` (OpenSSL's AES-GCM and Argon2id) packages, so a vector that merely echoes a bug
in the Rust code would be caught. It is not part of CI (it needs those packages):

    python3 -m venv /tmp/kat && /tmp/kat/bin/pip install blake3 cryptography
    /tmp/kat/bin/python testdata/crypto/verify_kat.py
"""
import json
import pathlib
import struct
import sys

import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

KAT = json.loads((pathlib.Path(__file__).parent / "kat.json").read_text())
H = bytes.fromhex


def pattern(n):
    return bytes(i % 251 for i in range(n))


def derive(context, data_key, suffix):
    return blake3.blake3(data_key + suffix, derive_key_context=context).digest()


def argon2id(passphrase, salt, kdf):
    return Argon2id(
        salt=salt, length=32, iterations=kdf["t_cost"], lanes=kdf["p_cost"],
        memory_cost=kdf["m_cost_kib"],
    ).derive(passphrase.encode())


def check(name, got, want):
    if got != want:
        sys.exit(f"MISMATCH {name}: python {got!r} != kat {want!r}")
    print(f"ok {name}")


def main():
    secret = H(KAT["master_secret"])
    check("master_secret", secret, bytes(range(96)))
    data_key, id_key = secret[:32], secret[32:64]
    for v in KAT["blob_ids"]:
        got = blake3.blake3(pattern(v["input_len"]), key=id_key).hexdigest()
        check(f"blob_id len {v['input_len']}", got, v["id"])
    for v in KAT["pack_keys"]:
        got = derive("rbackup pack key v1", data_key, H(v["pack_id"])).hex()
        check(f"pack_key {v['pack_id'][:8]}", got, v["key"])
    for v in KAT["meta_keys"]:
        got = derive("rbackup meta key v1", data_key, v["purpose"].encode()).hex()
        check(f"meta_key {v['purpose']!r}", got, v["key"])

    s = KAT["seal"]
    key = derive("rbackup pack key v1", data_key, H(s["pack_id"]))
    got = H(s["nonce"]) + AESGCM(key).encrypt(H(s["nonce"]), H(s["plaintext"]), H(s["ad"]))
    check("seal", got.hex(), s["sealed"])

    b = KAT["blob"]
    key = derive("rbackup pack key v1", data_key, H(b["pack_id"]))
    ad = b"rbackup blob v1" + bytes([b["kind"]]) + H(b["id"])
    sealed = H(b["sealed"])
    plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], ad)
    check("blob plaintext", plain, pattern(b["plaintext_len"]))
    check("blob id", blake3.blake3(plain, key=id_key).hexdigest(), b["id"])

    for v in KAT["argon2id"]:
        got = argon2id(v["passphrase"], H(v["salt"]), v["kdf"]).hex()
        check(f"argon2id {v['kdf']}", got, v["key"])

    kf = KAT["key_file"]["file"]
    kek = argon2id(KAT["key_file"]["passphrase"], H(kf["salt"]), kf["kdf"])
    k = kf["kdf"]
    ad = b"rbackup keyfile v1" + struct.pack("<III", k["m_cost_kib"], k["t_cost"], k["p_cost"])
    wrapped = H(kf["wrapped"])
    check("key file", AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], ad), secret)


main()
