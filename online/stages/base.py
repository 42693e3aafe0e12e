"""The stage protocol: every stage of the ranking pipeline is a small named class with a latency budget
and one method over the columnar batch. The executor (:mod:`online.pipeline`) owns ordering, timing,
the request deadline and the per-stage budget (an overrun is named in the response)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from online.candidates import CandidateBatch, RequestContext

if TYPE_CHECKING:  # the state is built by the app; stages only read it
    from online.state import ServiceState


@runtime_checkable
class Stage(Protocol):
    name: str
    budget_ms: float

    def run(self, ctx: RequestContext, batch: CandidateBatch | None, state: ServiceState) -> CandidateBatch | None:
        """Narrow ``batch.alive``, fill columns, or (the first stages) create the batch."""
        ...
