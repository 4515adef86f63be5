"""What a verification answers: the results of the answering flow, single and batch.

:class:`~sandbox.verification.service.VerificationService` returns them; the HTTP API sends their
wire form (``sandbox/api/responses/verification.py``). A single verification is an
:class:`Answer` (or a typed refusal, raised); a batch a :class:`BatchAnswer`, one
:class:`BatchLine` per request line in input order — an outcome and its receipt, or the line's
error — and the counts. A receipt is the signed document itself
(:class:`~sandbox.verification.receipts.SignedReceipt`), member for member.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.errors import VeilError
from sandbox.verification.lines import Line
from sandbox.verification.receipts import SignedReceipt

__all__ = ["Answer", "BatchAnswer", "BatchLine", "BatchSummary", "LineError"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One verification's answer: the outcome and its signed receipt, never a value."""

    outcome: str
    receipt: SignedReceipt

    @classmethod
    def of(cls, line: Line) -> Answer:
        assert line.outcome is not None and line.document is not None
        return cls(line.outcome, SignedReceipt.of(line.document))


@dataclass(frozen=True, slots=True)
class LineError:
    """Why a batch line got no answer: the error's code, status and detail."""

    code: str
    status: int
    detail: str

    @classmethod
    def of(cls, error: VeilError) -> LineError:
        return cls(error.error_code, error.status, error.detail)


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One line of a batch: ``outcome`` and ``receipt``, or ``error``."""

    index: int
    outcome: str | None = None
    receipt: SignedReceipt | None = None
    error: LineError | None = None


@dataclass(frozen=True, slots=True)
class BatchSummary:
    lines: int
    answered: int
    refused: int


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """A batch's answer: one result per line, in input order, and the counts."""

    results: tuple[BatchLine, ...]
    summary: BatchSummary

    @classmethod
    def of(cls, lines: list[Line]) -> BatchAnswer:
        """The answer of a batch's lines, once its answer transaction committed. A question
        asked twice shares one receipt (built once)."""
        receipts: dict[str, SignedReceipt] = {}
        results: list[BatchLine] = []
        for line in lines:
            if line.error is not None:
                results.append(BatchLine(line.index, error=LineError.of(line.error)))
                continue
            assert line.document is not None and line.receipt_id is not None
            receipt = receipts.get(line.receipt_id)
            if receipt is None:
                receipt = receipts[line.receipt_id] = SignedReceipt.of(line.document)
            results.append(BatchLine(line.index, line.outcome, receipt))
        answered = sum(1 for r in results if r.error is None)
        summary = BatchSummary(len(lines), answered, len(lines) - answered)
        return cls(tuple(results), summary)
