#!/usr/bin/env python3
"""Cross-implementation check: gantry-sign <-> Python (cbor2 + pycose).

What is checked (see README.md next to this file for the long version):

  1. gantry-sign signs (Ed25519 / -19 and ESP256 / -9), Python checks the
     envelope layout, the manifest digest, the kid (RFC 9679 thumbprint) and
     verifies the COSE_Sign1 with pycose.
  2. pycose signs (-19, -8 with Ed25519; -9, -7 with P-256), gantry-sign
     verifies; plus negative cases that gantry-sign must refuse.
  3. Multi-signature envelopes mixing both implementations.
  4. The draft-ietf-suit-manifest-37 example vectors, as a harness sanity check.

Every check prints `PASS name` or `FAIL name: reason`; the last line is
`N passed, M failed` and the exit status is non-zero if anything failed.

pycose 1.1.0 does not know the fully-specified algorithm identifiers
ESP256 (-9) and Ed25519 (-19) (RFC 9864): decoding a COSE_Sign1 whose
protected header says {1: -9} raises "Unknown COSE attribute with value:
[CoseAlgorithm - -9]". We register them below as subclasses of pycose's own
Es256 and EdDSA classes via `CoseAlgorithm.register_attribute()`, so that all
message handling (Sig_structure, header encoding, signing and verification)
is still pycose's code; the subclasses only add the identifier, the name and
a check that the key is on the one curve the fully-specified identifier
allows. If a future pycose knows -9 / -19 itself, its classes are used.

No network access; everything happens in a scratch directory.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import uuid
from pathlib import Path

from importlib.metadata import version

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pycose.algorithms import CoseAlgorithm, EdDSA, Es256
from pycose.exceptions import CoseException
from pycose.headers import KID, Algorithm
from pycose.keys import CoseKey
from pycose.keys.keyparam import KpKid
from pycose.messages import Sign1Message

PYCOSE_VERSION = version("pycose")
SCRIPT_DIR = Path(__file__).resolve().parent
REPO = (SCRIPT_DIR / ".." / ".." / "..").resolve()  # tests/interop/python -> repo root

# ---------------------------------------------------------------------------
# pycose: register the fully-specified algorithms ESP256 (-9), Ed25519 (-19)
# ---------------------------------------------------------------------------


def _require_curve(key, curve_name, alg_name):
    crv = getattr(key, "crv", None)
    if crv is None or crv.fullname != curve_name:
        raise CoseException(f"{alg_name} requires a {curve_name} key, got {crv}")


class Esp256(Es256):
    """ESP256: ECDSA using P-256 and SHA-256 (RFC 9864). Es256's code, P-256 only."""

    identifier = -9
    fullname = "ESP256"

    @classmethod
    def sign(cls, key, data):
        _require_curve(key, "P_256", cls.fullname)
        return super().sign(key, data)

    @classmethod
    def verify(cls, key, data, signature):
        _require_curve(key, "P_256", cls.fullname)
        return super().verify(key, data, signature)


class Ed25519Alg(EdDSA):
    """Ed25519 (RFC 9864): EdDSA's code, Ed25519 keys only."""

    identifier = -19
    fullname = "Ed25519"

    @classmethod
    def sign(cls, key, data):
        _require_curve(key, "ED25519", cls.fullname)
        return super().sign(key, data)

    @classmethod
    def verify(cls, key, data, signature):
        _require_curve(key, "ED25519", cls.fullname)
        return super().verify(key, data, signature)


def register_fully_specified_algorithms():
    """Registers -9 and -19 with pycose unless it already knows them.

    Returns the names of the ones registered here."""
    registry = CoseAlgorithm.get_registered_classes()
    registered = []
    for cls in (Esp256, Ed25519Alg):
        if cls.identifier not in registry:
            CoseAlgorithm.register_attribute()(cls)
            registered.append(f"{cls.fullname} ({cls.identifier})")
    return registered


REGISTERED = register_fully_specified_algorithms()
ALGS = {i: CoseAlgorithm.from_id(i) for i in (-9, -7, -19, -8)}
ALG_NAMES = {-9: "ESP256", -7: "ES256", -19: "Ed25519", -8: "EdDSA"}
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# ---------------------------------------------------------------------------
# Raw CBOR: item boundaries, so that bytes are kept exactly as they are
# ---------------------------------------------------------------------------


def cbor_head(major, n):
    """Minimal CBOR head for major type `major` with argument `n`."""
    m = major << 5
    if n < 24:
        return bytes([m | n])
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([m | ai]) + n.to_bytes(size, "big")
    raise ValueError("argument too large")


def _read_head(buf, pos):
    """Returns (major, argument or None for indefinite, position after the head)."""
    ib = buf[pos]
    major, ai = ib >> 5, ib & 0x1F
    pos += 1
    if ai < 24:
        return major, ai, pos
    if 24 <= ai <= 27:
        size = 1 << (ai - 24)
        if pos + size > len(buf):
            raise ValueError("truncated CBOR head")
        return major, int.from_bytes(buf[pos:pos + size], "big"), pos + size
    if ai == 31 and major in (2, 3, 4, 5):
        return major, None, pos
    raise ValueError(f"unsupported CBOR head 0x{ib:02x} at {pos - 1}")


def item_end(buf, pos):
    """Position just after the CBOR data item starting at `pos`."""
    major, arg, p = _read_head(buf, pos)
    if major in (0, 1, 7):
        return p
    if major in (2, 3):
        if arg is None:
            while buf[p] != 0xFF:
                p = item_end(buf, p)
            return p + 1
        if p + arg > len(buf):
            raise ValueError("truncated string")
        return p + arg
    if major == 6:
        return item_end(buf, p)
    count = None if arg is None else arg * (2 if major == 5 else 1)
    i = 0
    while (buf[p] != 0xFF) if count is None else (i < count):
        p = item_end(buf, p)
        i += 1
    return p + 1 if count is None else p


def split_container(buf, expect_major, tag=None):
    """Splits a (possibly tagged) array or map into raw pieces.

    Returns (prefix, [raw item, ...]) where prefix holds the tag and the head;
    a map's items alternate key, value. The whole of `buf` must be one item."""
    pos = 0
    major, arg, p = _read_head(buf, pos)
    if tag is not None:
        if major != 6 or arg != tag:
            raise ValueError(f"expected tag {tag}, found head 0x{buf[0]:02x}")
        pos = p
        major, arg, p = _read_head(buf, pos)
    if major != expect_major or arg is None:
        raise ValueError(f"expected definite-length major type {expect_major} at {pos}")
    head_end = p
    items, count = [], arg * (2 if major == 5 else 1)
    for _ in range(count):
        end = item_end(buf, p)
        items.append(buf[p:end])
        p = end
    if p != len(buf):
        raise ValueError(f"{len(buf) - p} trailing bytes")
    return buf[:head_end], items


def bstr_content(raw):
    """Content of a raw, definite-length bstr item."""
    major, n, p = _read_head(raw, 0)
    if major != 2 or n is None or p + n != len(raw):
        raise ValueError("not a definite-length bstr")
    return raw[p:]


def deterministic_key_problems(keys_raw, what):
    """RFC 8949 §4.2.1 as stated in the brief: shorter encoding first, then
    bytewise; keys minimally encoded. Returns a list of problems."""
    problems = []
    for k in keys_raw:
        if cbor2.dumps(cbor2.loads(k)) != k:
            problems.append(f"{what}: key {k.hex()} is not minimally encoded")
    for a, b in zip(keys_raw, keys_raw[1:]):
        if not (len(a), a) < (len(b), b):
            problems.append(f"{what}: key {a.hex()} is not before {b.hex()}")
    return problems


class Envelope:
    """A SUIT envelope kept as raw member bytes, so it can be re-emitted with
    only the authentication wrapper replaced."""

    def __init__(self, raw):
        self.raw = raw
        self.prefix, items = split_container(raw, 5, tag=107)
        self.keys_raw = items[0::2]
        self.values_raw = items[1::2]
        self.keys = [cbor2.loads(k) for k in self.keys_raw]

    def value_raw(self, key):
        return self.values_raw[self.keys.index(key)]

    @property
    def manifest_wrapped(self):
        """The bstr at key 3, header included: what SUIT_Digest covers."""
        return self.value_raw(3)

    @property
    def manifest(self):
        return bstr_content(self.manifest_wrapped)

    @property
    def auth_items(self):
        """Raw bstr items of the authentication wrapper."""
        _, items = split_container(bstr_content(self.value_raw(2)), 4)
        return items

    @property
    def digest_payload(self):
        """Content of auth-wrapper element 0: the detached COSE payload."""
        return bstr_content(self.auth_items[0])

    @property
    def sign1s(self):
        return [bstr_content(i) for i in self.auth_items[1:]]

    def with_signatures(self, sign1s):
        """The same envelope with the auth wrapper [element 0, *sign1s]; every
        other member keeps its bytes and position."""
        aw = cbor_head(4, 1 + len(sign1s)) + self.auth_items[0] + b"".join(cbor2.dumps(s) for s in sign1s)
        return self.replace(2, cbor2.dumps(aw))

    def replace(self, key, value_raw):
        out = [self.prefix]
        for k, kr, vr in zip(self.keys, self.keys_raw, self.values_raw):
            out += [kr, value_raw if k == key else vr]
        return b"".join(out)


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


def thumbprint(public_key):
    """RFC 9679 COSE key thumbprint: SHA-256 over deterministic CBOR of the
    required members {1: kty, -1: crv, -2: x[, -3: y]}."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {1: 1, -1: 6, -2: raw}  # kty OKP, crv Ed25519
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1":
        nums = public_key.public_numbers()
        members = {1: 2, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}  # EC2, P-256
    else:
        raise ValueError(f"unsupported key {public_key!r}")
    encoded = cbor2.dumps(members, canonical=True)
    # canonical=True sorts 1, -1, -2, -3 (0x01 < 0x20 < 0x21 < 0x22): check it did.
    assert encoded[1:2] == b"\x01" and encoded[3:4] == b"\x20", encoded.hex()
    return hashlib.sha256(encoded).digest()


def load_public_pem(path):
    return serialization.load_pem_public_key(Path(path).read_bytes())


class PyKey:
    """A key pair generated in Python with `cryptography`."""

    def __init__(self, kind, workdir, name):
        self.kind = kind
        if kind == "ed25519":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
        self.public = self.private.public_key()
        self.kid = thumbprint(self.public)
        self.pub_path = Path(workdir) / f"{name}.pub"
        self.pub_path.write_bytes(self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self.cose_private = CoseKey.from_pem_private_key(pem.decode())
        self.cose_public = CoseKey.from_pem_public_key(self.pub_path.read_text())


def pycose_sign(alg_id, key, payload):
    """A tagged COSE_Sign1 by pycose: protected {1: alg}, unprotected {4: kid},
    detached payload (nil), empty external_aad."""
    msg = Sign1Message(phdr={Algorithm: ALGS[alg_id]}, uhdr={KID: key.kid})
    msg.key = key.cose_private
    return msg.encode(tag=True, detached_payload=payload)


def pycose_verify(sign1, payload, cose_public_key):
    """pycose verification of a tagged COSE_Sign1 with detached `payload`."""
    msg = Sign1Message.decode(sign1)
    msg.key = cose_public_key
    return msg.verify_signature(detached_payload=payload)


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------


class Failure(Exception):
    pass


def need(cond, reason):
    if not cond:
        raise Failure(reason)


class Harness:
    def __init__(self, gantry, workdir, vectors):
        self.gantry = str(gantry)
        self.work = Path(workdir)
        self.vectors = Path(vectors)
        self.passed = 0
        self.failed = 0
        self._cache = {}

    def check(self, name, fn):
        try:
            fn()
        except Failure as e:
            self.failed += 1
            print(f"FAIL {name}: {e}")
        except Exception as e:  # a crash in a check is a failure of that check
            self.failed += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"FAIL {name}: {type(e).__name__}: {e} (at line {where.lineno})")
        else:
            self.passed += 1
            print(f"PASS {name}")

    def once(self, key, fn):
        """Runs fn once; later calls return its result (or raise its error again)."""
        if key not in self._cache:
            try:
                self._cache[key] = (True, fn())
            except Exception as e:
                self._cache[key] = (False, e)
        ok, value = self._cache[key]
        if not ok:
            raise Failure(f"setup '{key}' failed: {value}")
        return value

    def path(self, name):
        return self.work / name

    def run(self, *args):
        return subprocess.run([self.gantry, *map(str, args)], capture_output=True, text=True, timeout=120)

    def run_ok(self, *args):
        p = self.run(*args)
        need(p.returncode == 0, f"`gantry-sign {' '.join(map(str, args))}` exited {p.returncode}: {p.stderr.strip()}")
        return p

    def verify(self, envelope_path, keys, threshold=None):
        """`gantry-sign --json verify`; returns (exit code, parsed JSON or None, stderr)."""
        args = ["--json", "verify"]
        for k in keys:
            args += ["--key", k]
        if threshold is not None:
            args += ["--threshold", threshold]
        p = self.run(*args, envelope_path)
        try:
            doc = json.loads(p.stdout) if p.stdout.strip() else None
        except ValueError:
            doc = None
        return p.returncode, doc, p.stderr.strip()

    def verify_plain(self, envelope_path, keys, threshold=None):
        """`gantry-sign verify` (text output); returns (exit code, stderr)."""
        args = ["verify"]
        for k in keys:
            args += ["--key", k]
        if threshold is not None:
            args += ["--threshold", threshold]
        p = self.run(*args, envelope_path)
        return p.returncode, p.stderr.strip()

    # --- fixtures ----------------------------------------------------------

    def inputs(self):
        def make():
            self.path("m.wasm").write_bytes(b"\0asm\x01\0\0\0")
            self.path("c.toml").write_text('name = "interop"\nversion = "1.0.0"\n')
        return self.once("module and config", make)

    def container(self, out, key=None):
        self.inputs()
        args = ["container", "--module", self.path("m.wasm"), "--config", self.path("c.toml"),
                "--vendor", "example.com", "--class", "board", "--sequence", 5]
        if key:
            args += ["--key", key]
        self.run_ok(*args, "--out", self.path(out))
        return self.path(out).read_bytes()

    def gantry_key(self, alg):
        def make():
            prefix = self.path(f"g-{alg}")
            p = self.run_ok("keygen", "--alg", alg, "--out", prefix)
            ids = re.findall(r"\b[0-9a-f]{64}\b", p.stdout)
            need(len(ids) == 1, f"keygen stdout has no single 64-hex key id: {p.stdout!r}")
            return {"key": f"{prefix}.key", "pub": f"{prefix}.pub", "printed_id": bytes.fromhex(ids[0])}
        return self.once(f"gantry keygen {alg}", make)

    def gantry_signed(self, alg):
        def make():
            k = self.gantry_key(alg)
            return Envelope(self.container(f"g-{alg}.signed.suit", key=k["key"]))
        return self.once(f"gantry container {alg}", make)

    def unsigned(self):
        return self.once("unsigned envelope", lambda: Envelope(self.container("unsigned.suit")))

    def py_key(self, kind, name=None):
        name = name or f"py-{kind}"
        return self.once(f"python key {name}", lambda: PyKey(kind, self.work, name))

    def write(self, name, data):
        p = self.path(name)
        p.write_bytes(data)
        return p

    def py_signed(self, alg_id):
        """Unsigned gantry envelope + one pycose signature; returns its path."""
        def make():
            env = self.unsigned()
            key = self.py_key("ed25519" if alg_id in (-19, -8) else "p256")
            sign1 = pycose_sign(alg_id, key, env.digest_payload)
            return self.write(f"py{alg_id}.suit", env.with_signatures([sign1]))
        return self.once(f"python-signed {alg_id}", make)

    # --- 1. gantry-sign signs, Python verifies ----------------------------

    def checks_gantry_to_python(self):
        for alg, alg_id in (("ed25519", -19), ("p256", -9)):
            pre = f"gantry->pycose {alg}"

            def layout(alg=alg, alg_id=alg_id):
                env = self.gantry_signed(alg)
                self.need_deterministic(env)
                decoded = cbor2.loads(env.raw)
                need(isinstance(decoded, cbor2.CBORTag) and decoded.tag == 107, "envelope is not tag 107")
                need(env.keys == [2, 3, "#config"], f"envelope keys {env.keys}, expected [2, 3, '#config']")
                need(len(env.sign1s) == 1, f"{len(env.sign1s)} signatures, expected 1")
                sign1 = cbor2.loads(env.sign1s[0])
                need(isinstance(sign1, cbor2.CBORTag) and sign1.tag == 18, "COSE_Sign1 is not tag 18")
                phdr, uhdr, payload, sig = sign1.value
                need(phdr == cbor2.dumps({1: alg_id}), f"protected header {phdr.hex()}, expected {cbor2.dumps({1: alg_id}).hex()}")
                need(list(uhdr) == [4] and len(uhdr[4]) == 32, f"unprotected header {uhdr}, expected {{4: 32-byte kid}}")
                need(payload is None, "payload is not detached (nil)")
                need(len(sig) == 64, f"signature is {len(sig)} bytes, expected 64")
            self.check(f"{pre}: envelope layout, headers, deterministic key order", layout)

            def digest(alg=alg):
                env = self.gantry_signed(alg)
                d = cbor2.loads(env.digest_payload)
                need(isinstance(d, list) and len(d) == 2 and d[0] == -16, f"SUIT_Digest is {d!r}, expected [-16, h'..']")
                want = hashlib.sha256(env.manifest_wrapped).digest()
                need(d[1] == want, f"digest {d[1].hex()} != SHA-256(bstr-wrapped manifest) {want.hex()}")
                need(d[1] != hashlib.sha256(env.manifest).digest(), "digest is over the bare manifest")
                p = self.run_ok("--json", "inspect", self.path(f"g-{alg}.signed.suit"))
                shown = json.loads(p.stdout)["manifest_digest"]
                need(shown == want.hex(), f"inspect shows manifest_digest {shown}, Python computes {want.hex()}")
            self.check(f"{pre}: SUIT_Digest = SHA-256 over the bstr-wrapped manifest", digest)

            def verify(alg=alg):
                env, k = self.gantry_signed(alg), self.gantry_key(alg)
                cose_pub = CoseKey.from_pem_public_key(Path(k["pub"]).read_text())
                need(pycose_verify(env.sign1s[0], env.digest_payload, cose_pub) is True,
                     "pycose verify_signature() returned False")
            self.check(f"{pre}: pycose verifies the COSE_Sign1 ({ALG_NAMES[alg_id]})", verify)

            def kid(alg=alg):
                env, k = self.gantry_signed(alg), self.gantry_key(alg)
                header_kid = Sign1Message.decode(env.sign1s[0]).uhdr[KID]
                computed = thumbprint(load_public_pem(k["pub"]))
                need(header_kid == computed, f"kid {header_kid.hex()} != Python thumbprint {computed.hex()}")
                need(computed == k["printed_id"],
                     f"keygen printed {k['printed_id'].hex()}, Python thumbprint {computed.hex()}")
            self.check(f"{pre}: kid = RFC 9679 thumbprint = keygen's key id", kid)

            def flipped(alg=alg):
                env, k = self.gantry_signed(alg), self.gantry_key(alg)
                msg = Sign1Message.decode(env.sign1s[0])
                sig = bytearray(msg.signature)
                sig[len(sig) // 2] ^= 0x01
                msg.signature = bytes(sig)
                msg.key = CoseKey.from_pem_public_key(Path(k["pub"]).read_text())
                need(msg.verify_signature(detached_payload=env.digest_payload) is False,
                     "pycose accepted a signature with one byte flipped")
            self.check(f"{pre}: one flipped signature byte -> pycose refuses", flipped)

        def manifest_content():
            env = self.gantry_signed("p256")
            m = cbor2.loads(env.manifest)
            need(m.get(1) == 1 and m.get(2) == 5, f"manifest-version {m.get(1)}, sequence {m.get(2)}; expected 1, 5")
            common = cbor2.loads(m[3])
            shared = cbor2.loads(common[4])
            # Arguments of each directive-override-parameters (20) in the shared sequence.
            params = [arg for cmd, arg in zip(shared[0::2], shared[1::2]) if cmd == 20]
            need(params, "no directive-override-parameters in the shared sequence")
            vendor = uuid.uuid5(uuid.NAMESPACE_DNS, "example.com")
            want_class = uuid.uuid5(vendor, "board")
            first = params[0]
            need(first.get(1) == vendor.bytes, f"vendor-id {first.get(1, b'').hex()}, expected UUIDv5 {vendor.hex}")
            need(first.get(2) == want_class.bytes, f"class-id {first.get(2, b'').hex()}, expected UUIDv5 {want_class.hex}")
            module = self.path("m.wasm").read_bytes()
            config = bstr_content(env.value_raw("#config"))
            images = [p for p in params if 3 in p]  # 3: image-digest, 14: image-size
            want = [[-16, hashlib.sha256(module).digest(), len(module)], [-16, hashlib.sha256(config).digest(), len(config)]]
            got = [cbor2.loads(p[3]) + [p.get(14)] for p in images]
            need(got == want, f"image digests/sizes {got}, expected {want} (SHA-256 over module and config content)")
        self.check("gantry->pycose p256: manifest sequence, UUIDv5 vendor/class ids, image digests and sizes",
                   manifest_content)

        def cose_key_file():
            prefix = self.path("g-p256-cose")
            p = self.run_ok("keygen", "--alg", "p256", "--cose", "--out", prefix)
            printed = re.findall(r"\b[0-9a-f]{64}\b", p.stdout)
            key = CoseKey.decode(Path(f"{prefix}.cose").read_bytes())
            tp = thumbprint(load_public_pem(f"{prefix}.pub"))
            need(key.kid == tp, f"COSE_Key kid {key.kid.hex() if key.kid else None}, thumbprint {tp.hex()}")
            need(printed == [tp.hex()], f"keygen printed {printed}, thumbprint {tp.hex()}")
            env = Envelope(self.container("g-p256-cose.signed.suit", key=f"{prefix}.key"))
            need(pycose_verify(env.sign1s[0], env.digest_payload, key), "pycose refuses with the decoded COSE_Key")
        self.check("gantry->pycose: keygen --cose COSE_Key decodes in pycose, kid = thumbprint, verifies", cose_key_file)

    @staticmethod
    def need_deterministic(env):
        """The envelope's and the manifest's map keys are in deterministic order."""
        problems = deterministic_key_problems(env.keys_raw, "envelope")
        _, manifest_items = split_container(env.manifest, 5)
        problems += deterministic_key_problems(manifest_items[0::2], "manifest")
        need(not problems, "; ".join(problems))

    # --- 2. Python signs, gantry-sign verifies ----------------------------

    def checks_python_to_gantry(self):
        for alg_id in (-19, -8, -9, -7):
            kind = "ed25519" if alg_id in (-19, -8) else "p256"
            pre = f"pycose->gantry {ALG_NAMES[alg_id]} ({alg_id})"

            def sane(alg_id=alg_id, kind=kind):
                path = self.py_signed(alg_id)
                env = Envelope(path.read_bytes())
                base = self.unsigned()
                need(env.keys_raw == base.keys_raw and env.values_raw[1:] == base.values_raw[1:],
                     "rebuilt envelope changed members other than key 2")
                phdr = cbor2.loads(env.sign1s[0]).value[0]
                need(phdr == cbor2.dumps({1: alg_id}), f"pycose protected header {phdr.hex()}")
                need(pycose_verify(env.sign1s[0], env.digest_payload, self.py_key(kind).cose_public),
                     "pycose does not verify its own signature")
            self.check(f"{pre}: pycose signs a detached COSE_Sign1 over auth-wrapper element 0", sane)

            def accepted(alg_id=alg_id, kind=kind):
                path, key = self.py_signed(alg_id), self.py_key(kind)
                rc, err = self.verify_plain(path, [key.pub_path])
                need(rc == 0, f"gantry-sign verify exited {rc}: {err}")
                rc, doc, err = self.verify(path, [key.pub_path])
                need(rc == 0 and doc and doc.get("valid") is True, f"--json verify exited {rc}: {doc} {err}")
                need(doc.get("sequence_number") == 5, f"sequence_number {doc.get('sequence_number')}, expected 5")
                need(doc.get("signers") == [key.kid.hex()], f"signers {doc.get('signers')}, expected [{key.kid.hex()}]")
            self.check(f"{pre}: gantry-sign verify exits 0, --json valid true, sequence 5", accepted)

        for kind, alg_id in (("ed25519", -19), ("p256", -9)):
            def other_key(kind=kind, alg_id=alg_id):
                other = self.py_key(kind, name=f"py-{kind}-other")
                self.expect_refused(self.py_signed(alg_id), [other.pub_path], code="unknown-signer")
            self.check(f"pycose->gantry negative: {ALG_NAMES[alg_id]} envelope, a different Python {kind} key -> exit 1",
                       other_key)

        def digest_mismatch():
            env = Envelope(self.py_signed(-19).read_bytes())
            wrapped = bytearray(env.manifest_wrapped)
            wrapped[-1] ^= 0x01  # last content byte; the bstr header stays
            path = self.write("py-tampered.suit", env.replace(3, bytes(wrapped)))
            self.expect_refused(path, [self.py_key("ed25519").pub_path], code="digest-mismatch")
            need(pycose_verify(env.sign1s[0], env.digest_payload, self.py_key("ed25519").cose_public),
                 "the signature itself should still verify (only the manifest changed)")
        self.check("pycose->gantry negative: manifest byte changed, wrapper kept -> exit 1 digest-mismatch",
                   digest_mismatch)

        def alg_confusion(as_kid):
            env, ed = self.unsigned(), self.py_key("ed25519")
            p256 = self.py_key("p256")
            kid_key = ed if as_kid == "ed25519" else p256
            msg = Sign1Message(phdr={Algorithm: ALGS[-9]}, uhdr={KID: kid_key.kid})
            # Deliberately wrong: an Ed25519 signature under an ESP256 header.
            # pycose's Esp256 refuses to sign with an OKP key, so the
            # Sig_structure is assembled here and signed with cryptography.
            tbs = cbor2.dumps(["Signature1", msg.phdr_encoded, b"", env.digest_payload])
            msg.signature = ed.private.sign(tbs)
            sign1 = msg.encode(tag=True, sign=False)
            path = self.write(f"py-confused-{as_kid}.suit", env.with_signatures([sign1]))
            # With the Ed25519 key: the key type does not fit the algorithm.
            # With the P-256 key: the Ed25519 bytes are no ECDSA signature.
            self.expect_refused(path, [kid_key.pub_path],
                                code="algorithm-mismatch" if as_kid == "ed25519" else "signature-invalid")
            try:
                ok = pycose_verify(sign1, env.digest_payload, kid_key.cose_public)
            except CoseException:
                ok = False
            need(ok is False, "pycose accepted it")

        self.check("pycose->gantry negative: alg -9 over an Ed25519 signature, Ed25519 key -> exit 1",
                   lambda: alg_confusion("ed25519"))
        self.check("pycose->gantry negative: alg -9 over an Ed25519 signature, P-256 key named by kid -> exit 1",
                   lambda: alg_confusion("p256"))

        def header_variants():
            env = self.unsigned()
            for kind, alg_id in (("ed25519", -19), ("p256", -9)):
                key = self.py_key(kind)
                variants = {
                    "kid in the protected header": dict(phdr={Algorithm: ALGS[alg_id], KID: key.kid}, uhdr={}),
                    "no kid": dict(phdr={Algorithm: ALGS[alg_id]}, uhdr={}),
                    "opaque 12-byte kid": dict(phdr={Algorithm: ALGS[alg_id]}, uhdr={KID: b"release-2024"}),
                    # RFC 9052 does not require header maps in deterministic order.
                    "protected map {4: kid, 1: alg}": dict(phdr_encoded=cbor2.dumps({4: key.kid, 1: alg_id}), uhdr={}),
                }
                for label, hdrs in variants.items():
                    msg = Sign1Message(**hdrs)
                    msg.key = key.cose_private
                    sign1 = msg.encode(tag=True, detached_payload=env.digest_payload)
                    path = self.write("py-variant.suit", env.with_signatures([sign1]))
                    rc, doc, err = self.verify(path, [key.pub_path])
                    need(rc == 0, f"{ALG_NAMES[alg_id]}, {label}: exit {rc} {doc} {err} (COSE_Sign1 {sign1.hex()})")
        self.check("pycose->gantry header variants accepted: kid protected, no kid, opaque kid, unordered protected map",
                   header_variants)

        def cose_key_from_pycose():
            path = self.py_signed(-9)
            key = self.py_key("p256")
            for label, params in (("without kid", None), ("with kid", {KpKid: key.kid})):
                cose = CoseKey.from_pem_public_key(key.pub_path.read_text(), optional_params=params).encode()
                kpath = self.write("py-p256.cose", cose)
                rc, doc, err = self.verify(path, [kpath])
                need(rc == 0, f"gantry-sign refuses pycose's COSE_Key {label} {cose.hex()}: exit {rc} {doc} {err}")
        self.check("pycose->gantry: verify --key accepts a COSE_Key encoded by pycose", cose_key_from_pycose)

        def high_and_low_s():
            env, key = self.unsigned(), self.py_key("p256")
            sign1 = cbor2.loads(pycose_sign(-9, key, env.digest_payload))
            sig = sign1.value[3]
            r, s = sig[:32], int.from_bytes(sig[32:], "big")
            low, high = min(s, P256_N - s), max(s, P256_N - s)
            for label, s_value in (("low-S", low), ("high-S", high)):
                sign1.value[3] = r + s_value.to_bytes(32, "big")
                encoded = cbor2.dumps(sign1)
                need(pycose_verify(encoded, env.digest_payload, key.cose_public), f"pycose refuses the {label} form")
                path = self.write(f"py-p256-{label}.suit", env.with_signatures([encoded]))
                rc, doc, err = self.verify(path, [key.pub_path])
                need(rc == 0, f"gantry-sign refuses the {label} form of a valid ESP256 signature: exit {rc} {doc} {err}")
        self.check("pycose->gantry ESP256: both the low-S and the high-S form of a signature verify", high_and_low_s)

    def expect_refused(self, path, keys, code=None, threshold=None):
        rc, doc, err = self.verify(path, keys, threshold)
        need(rc == 1, f"gantry-sign verify exited {rc}, expected 1 ({doc} {err})")
        need(doc is not None and doc.get("valid") is False, f"--json output {doc!r} lacks valid: false")
        if code is not None:
            need(doc.get("code") == code, f"code {doc.get('code')!r}, expected {code!r} ({doc.get('error')})")
        rc, err = self.verify_plain(path, keys, threshold)
        need(rc == 1 and err, f"plain verify exited {rc} with stderr {err!r}, expected 1 and a reason")

    # --- 3. Multi-signature ------------------------------------------------

    def checks_multi(self):
        def mixed_path():
            def make():
                env, ed = self.gantry_signed("p256"), self.py_key("ed25519")
                sign1 = pycose_sign(-19, ed, env.digest_payload)
                return self.write("multi.suit", env.with_signatures(env.sign1s + [sign1]))
            return self.once("multi-signature envelope", make)

        def gantry_threshold():
            path, g, ed = mixed_path(), self.gantry_key("p256"), self.py_key("ed25519")
            rc, doc, err = self.verify(path, [g["pub"], ed.pub_path], threshold=2)
            need(rc == 0 and doc and doc.get("valid") is True, f"exit {rc}: {doc} {err}")
            want = sorted([g["printed_id"].hex(), ed.kid.hex()])
            need(sorted(doc.get("signers", [])) == want, f"signers {doc.get('signers')}, expected {want}")
            other = self.py_key("ed25519", name="py-ed25519-other")
            self.expect_refused(path, [g["pub"], other.pub_path], threshold=2, code="threshold-not-met")
        self.check("multi-signature: gantry p256 + pycose ed25519 -> verify --threshold 2 exits 0 "
                   "(and 1 with a wrong second key)", gantry_threshold)

        def pycose_both():
            env = Envelope(mixed_path().read_bytes())
            g, ed = self.gantry_key("p256"), self.py_key("ed25519")
            need(len(env.sign1s) == 2, f"{len(env.sign1s)} signatures")
            keys = [CoseKey.from_pem_public_key(Path(g["pub"]).read_text()), ed.cose_public]
            for i, (sign1, key) in enumerate(zip(env.sign1s, keys)):
                need(pycose_verify(sign1, env.digest_payload, key), f"signature {i} does not verify in pycose")
        self.check("multi-signature: pycose verifies both signatures", pycose_both)

        def gantry_appends():
            src, g, ed = self.py_signed(-19), self.gantry_key("p256"), self.py_key("ed25519")
            out = self.path("py-then-gantry.suit")
            self.run_ok("sign", "--key", g["key"], "--in", src, "--out", out)
            before, after = Envelope(src.read_bytes()), Envelope(out.read_bytes())
            need(len(after.sign1s) == 2, f"{len(after.sign1s)} signatures after gantry-sign sign, expected 2")
            need(after.sign1s[0] == before.sign1s[0], "gantry-sign sign changed the pycose COSE_Sign1 bytes")
            need(after.auth_items[0] == before.auth_items[0], "gantry-sign sign changed the SUIT_Digest")
            need(after.values_raw[1:] == before.values_raw[1:], "gantry-sign sign changed the manifest/config")
            g_pub = CoseKey.from_pem_public_key(Path(g["pub"]).read_text())
            need(pycose_verify(after.sign1s[1], after.digest_payload, g_pub), "pycose refuses gantry's added signature")
            rc, doc, err = self.verify(out, [g["pub"], ed.pub_path], threshold=2)
            need(rc == 0, f"verify --threshold 2 exited {rc}: {doc} {err}")
        self.check("multi-signature: gantry-sign sign appends to a pycose-signed envelope, keeping its bytes",
                   gantry_appends)

    # --- 4. Draft vectors --------------------------------------------------

    def checks_vectors(self):
        suit = self.vectors / "suit"
        pem = suit / "suit-examples-es256-public.pem"

        def verify_vector(path):
            env = Envelope(path.read_bytes())
            d = cbor2.loads(env.digest_payload)
            need(d[0] == -16 and d[1] == hashlib.sha256(env.manifest_wrapped).digest(),
                 f"{path.name}: digest does not match the bstr-wrapped manifest")
            need(env.sign1s, f"{path.name}: no signature")
            key = CoseKey.from_pem_public_key(pem.read_text())
            for i, sign1 in enumerate(env.sign1s):
                need(pycose_verify(sign1, env.digest_payload, key), f"{path.name}: signature {i} refused by pycose")

        def example0():
            need(pem.is_file(), f"missing {pem} (set GANTRY_VECTORS)")
            verify_vector(suit / "example0.signed.cbor")
        self.check("draft vector example0: pycose verifies with the draft key", example0)

        def others():
            files = sorted(p for p in suit.glob("example*.signed*.cbor") if p.name != "example0.signed.cbor")
            need(files, f"no other example*.signed*.cbor under {suit}")
            for f in files:
                verify_vector(f)
        self.check("draft vectors example1-5 (incl. severed): pycose verifies with the draft key", others)

        def gantry_vector():
            path = suit / "example0.signed.cbor"
            rc, doc, err = self.verify(path, [pem])
            need(rc == 0 and doc and doc.get("valid") is True, f"gantry-sign verify exited {rc}: {doc} {err}")
            want = thumbprint(load_public_pem(pem)).hex()
            need(doc.get("signers") == [want], f"signers {doc.get('signers')}, Python thumbprint of the draft key {want}")
        self.check("draft vector example0: gantry-sign verifies it; its signer id = Python thumbprint", gantry_vector)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gantry-sign", default=str(REPO / "target" / "debug" / "gantry-sign"),
                    help="gantry-sign binary (default: %(default)s)")
    ap.add_argument("--workdir", help="scratch directory, created if missing, must be empty "
                                      "(default: a fresh temporary directory, removed if all checks pass)")
    args = ap.parse_args()

    gantry = Path(args.gantry_sign).resolve()
    if not os.access(gantry, os.X_OK):
        print(f"error: {gantry} is not an executable (build it: cargo build -p gantry-signing)", file=sys.stderr)
        return 2
    if args.workdir:
        workdir, temporary = Path(args.workdir), False
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            print(f"error: --workdir {workdir} is not empty (gantry-sign keygen never overwrites)", file=sys.stderr)
            return 2
    else:
        workdir, temporary = Path(tempfile.mkdtemp(prefix="gantry-interop-")), True
    vectors = Path(os.environ.get("GANTRY_VECTORS", REPO.parent / "shared" / "vectors"))

    if REGISTERED:
        print(f"# pycose {PYCOSE_VERSION} lacks {', '.join(REGISTERED)}: registered as subclasses of Es256/EdDSA")
    h = Harness(gantry, workdir, vectors)
    h.checks_gantry_to_python()
    h.checks_python_to_gantry()
    h.checks_multi()
    h.checks_vectors()

    if h.failed:
        print(f"# files kept in {workdir}")
    elif temporary:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{h.passed} passed, {h.failed} failed")
    return 1 if h.failed else 0


if __name__ == "__main__":
    sys.exit(main())
