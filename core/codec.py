"""Payload encryption: what Temporal stores of a case (names, bank accounts, amounts,
reasons) is AES-256-GCM ciphertext, readable only with the platform's keys.

Every payload the SDK sends is encrypted, whatever its type: inputs, results, signals,
updates, queries, memos, and, through the failure converter, failure messages and stack
traces (an error quoting an account number must not leak). No type stays clear: proving
one harmless would cost more than the encryption, which is a few microseconds a payload.
Search attributes are not payloads of the codec; they hold only codes, never names,
identifiers or money (temporal-dev.yaml).

Keys form a ring. The first key encrypts; every key decrypts, found by the key id each
payload carries in its metadata. Rotation puts a new key first and keeps the old ones,
so a history written under an old key still decodes and replays. Keys come from
settings (ZHIDA_CODEC_KEYS, or the file ZHIDA_CODEC_KEY_FILE), never from the code.

Workflow code never imports this module (it would pull `cryptography` into the
sandbox): the codec is part of the data converter that clients, workers and replayers
are given (core/temporal.py), which runs outside the workflow.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError, Message
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import PayloadCodec

from core.settings import Environment, Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16  # AES-GCM's authentication tag, at the end of the ciphertext
KEY_BYTES = 32
_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_KEY_FILE = "codec-keys"


class CodecError(ValueError):
    """A payload that cannot be decrypted, or a key ring that cannot be read."""


@dataclass(frozen=True)
class KeyRing:
    """Named AES-256 keys; the first encrypts."""

    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise CodecError("the key ring is empty")
        ids = [key_id for key_id, _ in self.keys]
        if len(set(ids)) != len(ids):
            raise CodecError("a key id appears twice in the key ring")
        for key_id, key in self.keys:
            if not _KEY_ID_PATTERN.fullmatch(key_id):
                raise CodecError(f"key id {key_id!r}: 1-64 letters, digits and ._-")
            if len(key) != KEY_BYTES:
                raise CodecError(f"key {key_id}: {len(key)} bytes, AES-256 needs {KEY_BYTES}")

    @property
    def current_id(self) -> str:
        return self.keys[0][0]

    def key(self, key_id: str) -> bytes | None:
        return next((key for kid, key in self.keys if kid == key_id), None)

    @classmethod
    def generate(cls, key_id: str) -> KeyRing:
        return cls(((key_id, AESGCM.generate_key(bit_length=256)),))

    def rotated(self, key_id: str) -> KeyRing:
        """This ring with a new key that encrypts from now on; the old ones still decrypt."""
        return KeyRing(((key_id, AESGCM.generate_key(bit_length=256)), *self.keys))

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """`id:base64key` entries separated by commas or lines; `#` starts a comment."""
        entries = []
        for raw in re.split(r"[,\n]", text):
            entry = raw.split("#", 1)[0].strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise CodecError("a key ring entry is `id:base64key`")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise CodecError(f"key {key_id.strip()}: not base64") from None
            entries.append((key_id.strip(), key))
        return cls(tuple(entries))

    def dump(self) -> str:
        return "".join(f"{kid}:{base64.b64encode(key).decode()}\n" for kid, key in self.keys)


def key_ring(settings: Settings) -> KeyRing:
    """The key ring settings name. Outside production, with none named, the ring in
    `var_dir/codec-keys`, made with one new key the first time."""
    if settings.codec_keys is not None:
        return KeyRing.parse(settings.codec_keys.get_secret_value())
    path = settings.codec_key_file
    if path is None:
        if settings.environment is Environment.PRODUCTION:
            raise CodecError("production needs ZHIDA_CODEC_KEYS or ZHIDA_CODEC_KEY_FILE")
        path = settings.var_dir / DEFAULT_KEY_FILE
        if not path.exists():
            write_key_ring(path, KeyRing.generate("k1"), exclusive=True)
    try:
        return KeyRing.parse(path.read_text("utf-8"))
    except OSError as exc:
        raise CodecError(f"cannot read the key file {path}: {exc.strerror}") from None


def write_key_ring(path: Path, ring: KeyRing, *, exclusive: bool = False) -> None:
    """Write a key file readable by its owner only (created that way, never widened).
    `exclusive`: only if there is none yet (two processes starting at once keep the
    first one's ring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        return
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode on open: narrow it
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(ring.dump())


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (its metadata included, so the
    type of a value is hidden too). The key id is authenticated as associated data."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._encrypt_id = ring.current_id
        self._encrypt = AESGCM(ring.keys[0][1])
        self._decrypt = {kid: AESGCM(key) for kid, key in ring.keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self._encrypt_id.encode()
        sealed = self._encrypt.encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: key_id},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """The clear payload; a payload that was never encrypted (written before the
        codec existed) passes as it is."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode("utf-8", "replace")
        cipher = self._decrypt.get(key_id)
        if cipher is None:
            raise CodecError(f"payload encrypted with key {key_id!r}, which the ring lacks")
        if len(payload.data) < NONCE_BYTES + TAG_BYTES:
            raise CodecError(f"payload under key {key_id!r} is too short to be ciphertext")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            clear = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise CodecError(f"payload under key {key_id!r} fails authentication") from None
        try:
            return Payload.FromString(clear)
        except DecodeError:
            raise CodecError(f"payload under key {key_id!r} holds no payload") from None


# ----- whole messages: a stored history, encrypted or decoded in place --------------------

_SKIPPED = frozenset({"temporal.api.common.v1.SearchAttributes", "temporal.api.common.v1.Header"})
# Markers are written by the SDK's core itself (a patch marker names its patch), in clear:
# the core reads them back without the codec.
_MARKER = "temporal.api.history.v1.MarkerRecordedEventAttributes"


def decode_message(codec: EncryptionCodec, message: Message) -> None:
    """Decrypt every payload in a history, event or other Temporal message, and put each
    failure's encoded message and stack trace back in place: what an auditor reads."""
    _walk(message, codec.decrypt, _decode_failure)


def encode_message(codec: EncryptionCodec, message: Message) -> None:
    """Encrypt every clear payload of a message, failure messages included, as the
    codec would have written them (for a history recorded before encryption)."""
    _walk(
        message,
        lambda p: p if p.metadata.get("encoding") == ENCODING else codec.encrypt(p),
        _encode_failure,
        skip=_SKIPPED | {_MARKER},
    )


def _decode_failure(failure: Failure, transform: Callable[[Payload], Payload]) -> None:
    if not failure.HasField("encoded_attributes"):
        return
    clear = transform(failure.encoded_attributes)
    try:
        attributes = json.loads(clear.data)
    except ValueError:
        return
    failure.message = str(attributes.get("message", failure.message))
    failure.stack_trace = str(attributes.get("stack_trace", failure.stack_trace))
    failure.ClearField("encoded_attributes")


def _encode_failure(failure: Failure, transform: Callable[[Payload], Payload]) -> None:
    if failure.HasField("encoded_attributes"):
        return
    attributes = {"message": failure.message, "stack_trace": failure.stack_trace}
    failure.encoded_attributes.CopyFrom(
        Payload(
            metadata={"encoding": b"json/plain"},
            data=json.dumps(attributes, separators=(",", ":")).encode(),
        )
    )
    failure.message = "Encoded failure"
    failure.stack_trace = ""


def _walk(
    message: Message,
    transform: Callable[[Payload], Payload],
    on_failure: Callable[[Failure, Callable[[Payload], Payload]], None],
    skip: frozenset[str] = _SKIPPED,
) -> None:
    if isinstance(message, Failure):
        on_failure(message, transform)
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.full_name in skip:
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is None:
                continue
            for key in list(value):
                _visit(value[key], transform, on_failure, skip)
        elif field.is_repeated:
            for item in value:
                _visit(item, transform, on_failure, skip)
        else:
            _visit(value, transform, on_failure, skip)


def _visit(
    value: Message,
    transform: Callable[[Payload], Payload],
    on_failure: Callable[[Failure, Callable[[Payload], Payload]], None],
    skip: frozenset[str],
) -> None:
    if isinstance(value, Payload):
        value.CopyFrom(transform(value))
    else:
        _walk(value, transform, on_failure, skip)
