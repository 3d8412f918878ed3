"""Structured logging: one line per event, with the call id of the call being handled.

The call id travels in a ContextVar, so every log line written while a call's task runs carries it without
threading a logger through every function. JSON lines are what log shippers (Loki, Elastic) want; ``text`` is
for a person at a terminal.

Both formatters pass the message, extra fields and tracebacks through ``crm_bridge.masking.redact_text``: a
card number or IBAN that reaches a log line by accident (an agent's note in an error, a CRM payload in a
traceback) leaves masked. PINs are never logged in the first place (the IVR keeps them out of traces).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from crm_bridge.masking import redact_text

call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact_text(record.getMessage()),
        }
        cid = getattr(record, "call_id", None) or call_id_var.get()
        if cid:
            out["call_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "call_id" and not key.startswith("_"):
                if isinstance(value, (str, int, float, bool, type(None))):
                    out[key] = redact_text(value) if isinstance(value, str) else value
                else:
                    out[key] = redact_text(str(value))
        if record.exc_info:
            out["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        cid = getattr(record, "call_id", None) or call_id_var.get()
        extra = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and k != "call_id"
                 and not k.startswith("_")}
        tail = " ".join(f"{k}={v}" for k, v in extra.items())
        head = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{head} {record.levelname:<7} {record.name}: {redact_text(record.getMessage())}"
        if cid:
            line += f" [call {cid}]"
        if tail:
            line += f" {redact_text(tail)}"
        if record.exc_info:
            line += "\n" + redact_text(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "INFO", fmt: str = "json", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "asyncio", "numba", "matplotlib", "speechbrain", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
