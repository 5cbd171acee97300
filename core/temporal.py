"""Temporal client from settings: local dev server or a cluster with TLS / API key."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig

from core.settings import Settings


async def connect(settings: Settings, *, identity: str | None = None) -> Client:
    tls: TLSConfig | bool = settings.temporal_tls
    if settings.temporal_tls_client_cert and settings.temporal_tls_client_key:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_client_cert.read_bytes(),
            client_private_key=settings.temporal_tls_client_key.read_bytes(),
        )
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=tls,
        api_key=api_key,
        identity=identity,
    )
