"""Temporal client from settings: local dev server or a cluster with TLS / API key."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, NoReturn

from temporalio.client import (
    Client,
    DescribeWorkflowInput,
    Interceptor,
    OutboundInterceptor,
    QueryWorkflowInput,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    WorkflowHandle,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.service import RetryConfig, TLSConfig

from core.codec import EncryptionCodec, KeyRing, key_ring
from core.settings import Settings


def data_converter(ring: KeyRing) -> DataConverter:
    """The one data converter: pydantic values, every payload encrypted with the ring's
    current key (core/codec.py), failure messages and stack traces moved into an
    encrypted payload too. Every client, worker and replayer is given it."""
    return replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def converter_for(settings: Settings) -> DataConverter:
    return data_converter(key_ring(settings))


# A request must not wait long on a Temporal that is down: the SDK's default retries a
# refused connection for 10 s. These give up after about 1.5 s.
REQUEST_RETRY = RetryConfig(
    initial_interval_millis=100,
    multiplier=2.0,
    max_interval_millis=500,
    max_elapsed_time_millis=1500,
    max_retries=4,
)
# Deadlines of one call from a request, for a server that accepts and never answers:
# short for starts, queries and signals; an update waits until the workflow accepted it,
# which on a busy worker can take a few seconds (a timeout there is a 503 that says to
# send it again with the same Idempotency-Key).
CALL_DEADLINE = timedelta(seconds=5)
UPDATE_DEADLINE = timedelta(seconds=10)


class RequestDeadlines(Interceptor):
    """Gives each client call that sets no `rpc_timeout` of its own a deadline."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Deadlines(next)


class _Deadlines(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        return await super().start_workflow(_with_deadline(input, CALL_DEADLINE))

    async def describe_workflow(self, input: DescribeWorkflowInput) -> Any:
        return await super().describe_workflow(_with_deadline(input, CALL_DEADLINE))

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        return await super().query_workflow(_with_deadline(input, CALL_DEADLINE))

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        await super().signal_workflow(_with_deadline(input, CALL_DEADLINE))

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> Any:
        return await super().start_workflow_update(_with_deadline(input, UPDATE_DEADLINE))


def _with_deadline(input: Any, deadline: timedelta) -> Any:
    return input if input.rpc_timeout is not None else replace(input, rpc_timeout=deadline)


async def connect_for_requests(settings: Settings, *, identity: str) -> Client:
    """The client of a process that answers requests (the API): calls fail within
    seconds when Temporal is down, instead of retrying for ten."""
    return await connect(
        settings, identity=identity, retry_config=REQUEST_RETRY, interceptors=[RequestDeadlines()]
    )


async def connect(
    settings: Settings,
    *,
    identity: str | None = None,
    retry_config: RetryConfig | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
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
        data_converter=converter_for(settings),
        tls=tls,
        api_key=api_key,
        identity=identity,
        retry_config=retry_config,
        interceptors=interceptors,
    )


def exit_after_client(code: int = 0) -> NoReturn:
    """End a short-lived process that used a Temporal client without the interpreter's
    teardown: the client's Rust threads can outlive it and abort the process on the way
    out, after the work is done (Fatal Python error: PyGILState_Release …,
    temporalio/sdk-python#300; seen in `zhida sync-facts` and once in the chaos bench).
    Output is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
