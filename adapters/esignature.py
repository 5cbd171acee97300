"""Signing a commitment letter: the adapter point for an e-signature service.

`domain.commitment.admission` asks a `Signer` (its port) to sign the SHA-256 of the
letter a firm accepted. `PlatformAcceptance` is the platform's own record of the
acceptance (who, when, from which request origin) and is what runs today; a real
e-signature service (a CA-backed 电子签章 platform) is another class with the same
`sign`, returning its signature's provider and reference, chosen where the API builds
its dependencies.
"""

from __future__ import annotations

from models.commitment import Signature
from models.types import utcnow


class PlatformAcceptance:
    """The firm's signed-in acceptance of the letter, recorded by the platform."""

    provider = "platform"

    async def sign(self, letter_sha256: str, signer: str, uscc: str, origin: str) -> Signature:
        return Signature(
            letter_sha256=letter_sha256,
            signer=signer,
            uscc=uscc,
            signed_at=utcnow(),
            origin=origin[:200],
            provider=self.provider,
        )
