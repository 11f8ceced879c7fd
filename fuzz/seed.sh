#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds from the shared test vectors.
# Needs python3 with cbor2; cose_key, trust_root, boot_slot, boot_keys, boot_record,
# slot_table and container_slot seeds come from the small `seedgen` program
# (stable toolchain), which checks every slot image seed against the
# bootloader's or the device runtime's slot check before writing it.
# Corpus dirs are gitignored.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vectors="${VECTORS:-$here/../../shared/vectors}"
corpus="$here/corpus"
mkdir -p "$corpus"/{envelope,verify,manifest,cose_sign1,cose_key,trust_root,boot_slot,boot_keys,boot_record,slot_table,container_slot,ticket,device_api,container_config,wasm_module,blob_tree}

# Envelopes: draft examples, libcsuit files, derived (Ed25519 + negative) vectors.
envelopes=("$vectors"/suit/*.cbor "$vectors"/suit/libcsuit/*.suit "$vectors"/suit/derived/*.cbor)
for f in "${envelopes[@]}"; do
    [ -f "$f" ] || continue
    cp "$f" "$corpus/envelope/"
    cp "$f" "$corpus/verify/"
done

# Manifests (bstr content of envelope key 3), COSE_Sign1 blocks from the
# authentication wrappers, and the COSE WG sign1 vectors' output.cbor.
python3 - "$corpus" "$vectors" "${envelopes[@]}" <<'PY'
import sys, os, glob, json, hashlib
import cbor2
corpus, vectors, files = sys.argv[1], sys.argv[2], sys.argv[3:]
def put(target, data):
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(data)
for path in files:
    try:
        env = cbor2.loads(open(path, "rb").read())
    except Exception as e:
        print(f"skip {path}: {e}", file=sys.stderr)
        continue
    if isinstance(env, cbor2.CBORTag):
        env = env.value
    if not isinstance(env, dict):
        continue
    if isinstance(env.get(3), bytes):
        put("manifest", env[3])
    auth = env.get(2)
    if isinstance(auth, bytes):
        try:
            wrapper = cbor2.loads(auth)
        except Exception:
            continue
        for block in wrapper[1:] if isinstance(wrapper, list) else []:
            if isinstance(block, bytes):
                put("cose_sign1", block)
for path in glob.glob(os.path.join(vectors, "cose", "**", "*.json"), recursive=True):
    out = json.load(open(path)).get("output", {}).get("cbor")
    if out:
        put("cose_sign1", bytes.fromhex(out))
PY

# A few hand-made COSE_Keys, then real keys, signed trust roots, signed
# slot images (three that boot, one refusal per stage), boot records, slot
# tables and signed container slot images (three that verify, one refusal
# per stage).
printf '\xa3\x01\x01\x20\x06\x21\x58\x20' > "$corpus/cose_key/okp-truncated"
printf '\xa0' > "$corpus/cose_key/empty-map"
printf '\xa0' > "$corpus/trust_root/empty-map"
cargo run --quiet --release --manifest-path "$here/seedgen/Cargo.toml" -- \
    "$corpus" "$vectors/suit/suit-examples-es256-private.pem"

# Device API bodies: a check-in with a container and a measured firmware
# entry, a report, a check-in answer and a login answer.
d=$(printf 'ab%.0s' {1..32})
printf '{"nonce":"AAAAAAAAAAAAAAAAAAAAAA==","inventory":[{"stream":"app","manifest_digest":"%s","sequence":3,"state":"confirmed"},{"stream":"firmware","manifest_digest":"%s","sequence":2,"state":"probation","boot":{"image_digest":"%s","image_size":4000,"boot_count":5,"slot":"b","trial_boots":1,"security_counter":1,"last_failure":"trial-expired"}}],"trust_root_version":1}' "$d" "$d" "$d" > "$corpus/device_api/checkin"
printf '{"stream":"app","manifest_digest":"%s","state":"failed","progress":100,"detail":"reverted"}' "$d" > "$corpus/device_api/report"
printf '{"ticket":"","etag":"\"e1\"","poll_after":30,"assignments":[],"trust_roots":[]}' > "$corpus/device_api/checkin-answer"
printf '{"device_id":"00000000000000000000000000000001","token":"t","expires_in":900}' > "$corpus/device_api/login"

for t in "$corpus"/*/; do
    printf '%-12s %3d seeds\n' "$(basename "$t")" "$(ls "$t" | wc -l)"
done

# Wasm modules: the runtime's own fixtures. Blob trees: canonical archives
# of small trees, made by the same code the release tool uses.
cp "$here"/../device-runtime/fixtures/misbehave/*.wasm "$corpus/wasm_module/"
python3 - "$corpus/blob_tree" <<'PY'
import io, os, sys, tarfile, hashlib
def put(data):
    with open(os.path.join(sys.argv[1], hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)
for entries in ([("lib/", None), ("lib/os.py", b"import sys\n")], [("a", b"x"), ("d/", None), ("d/" + "n" * 120, b"long")]):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.mode, info.size = 0o644, len(data)
                t.addfile(info, io.BytesIO(data))
    put(buf.getvalue())
PY
