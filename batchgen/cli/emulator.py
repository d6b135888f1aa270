"""``batchgen emulator``: serve a local emulator of the Segmind API (for tests, demos and load runs)."""

from __future__ import annotations

import argparse

from batchgen.errors import UsageError
from batchgen.outcome.exits import ExitCode

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments: every knob of the emulator's config."""
    from batchgen.emulator.config import IMAGE_FAULTS

    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    p.add_argument("--credits", type=int, help="credits, one per accepted submit (default: unlimited)")
    p.add_argument("--rpm", type=int, help="requests per minute per key (default: off)")
    p.add_argument("--rpm-counts-polls", action="store_true", help="status polls count against --rpm")
    p.add_argument("--workers", type=int, default=4, help="jobs processed at once (default 4)")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply inference times (e.g. 0.001)")
    p.add_argument("--blocked-terms", default="", help="comma-separated terms moderation blocks")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds results are kept (default 3600)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="fraction answered 500/502/504")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction closed without an answer")
    p.add_argument("--fault-seed", type=int, default=0, help="seed for faults (reproducible)")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS", help="added delay per request")
    p.add_argument(
        "--image-fault",
        choices=IMAGE_FAULTS,
        default="none",
        help="how image downloads misbehave: html page, endless or slow body, 403, 410 (default none)",
    )
    p.add_argument(
        "--image-fault-rate", type=float, default=1.0, help="fraction of image downloads hit (default 1)"
    )
    p.add_argument(
        "--retry-after",
        metavar="VALUE",
        help="Retry-After sent on every 429 (default: computed; none: no such header, only "
        "x-rate-limit-reset-at-utc, as Segmind is reported to do)",
    )
    p.add_argument("--stall-rate", type=float, default=0.0, help="fraction of jobs that never finish")
    p.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold each accepted submit's answer this long (to kill a client mid-request)",
    )
    p.add_argument(
        "--answer-delay-rate",
        type=float,
        default=1.0,
        metavar="FRACTION",
        help="the fraction of accepted submits whose answer --answer-delay holds (default 1)",
    )
    p.add_argument(
        "--status-outage",
        type=_outage,
        default=(0.0, 0.0),
        metavar="SECONDS/EVERY",
        help="answer status polls 502 for SECONDS of every EVERY seconds, e.g. 2/10 (default: never)",
    )
    p.add_argument("--price", type=float, default=0.04, help="USD each accepted request costs (default 0.04)")
    p.add_argument(
        "--answer-cost",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put each request's cost in its answers' metrics (default on; off: only the history prices it)",
    )
    p.add_argument(
        "--history-ttl",
        type=float,
        default=7 * 24 * 3600.0,
        metavar="SECONDS",
        help="seconds the request history keeps a request (default 7 days)",
    )
    p.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the request history (default on)",
    )
    p.add_argument(
        "--history-lag",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a request shows in the history only this long after its submit (default 0)",
    )
    p.add_argument("--retired", action="store_true", help="answer every submit 410: the model was retired")
    p.add_argument("--image-format", choices=["png", "jpeg"], default="png")
    p.add_argument("--image-size", type=int, default=512, help="long side in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed for inference-time draws")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from batchgen.emulator import EmulatorConfig, serve

    try:
        config = EmulatorConfig(
            api_key=args.api_key,
            credits=args.credits,
            rpm=args.rpm,
            rpm_counts_polls=args.rpm_counts_polls,
            workers=args.workers,
            time_scale=args.time_scale,
            blocked_terms=tuple(t.strip() for t in args.blocked_terms.split(",") if t.strip()),
            ttl=args.ttl,
            fault_rate=args.fault_rate,
            drop_rate=args.drop_rate,
            fault_seed=args.fault_seed,
            latency_ms=args.latency,
            image_fault=args.image_fault,
            image_fault_rate=args.image_fault_rate,
            retry_after=args.retry_after,
            stall_rate=args.stall_rate,
            answer_delay=args.answer_delay,
            price=args.price,
            answer_cost=args.answer_cost,
            history_ttl=args.history_ttl,
            history=args.history,
            history_lag=args.history_lag,
            answer_delay_rate=args.answer_delay_rate,
            status_outage=args.status_outage[0],
            status_outage_every=args.status_outage[1],
            retired=args.retired,
            image_format=args.image_format,
            image_size=args.image_size,
            seed=args.seed,
        )
    except ValueError as exc:  # an out-of-range option: say which, no traceback
        raise UsageError(f"emulator: {exc}") from None
    serve(config, host=args.host, port=args.port)
    return ExitCode.OK


def _outage(text: str) -> tuple[float, float]:
    """``--status-outage SECONDS/EVERY``: two numbers of seconds."""
    seconds, sep, every = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return float(seconds), float(every)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SECONDS/EVERY, e.g. 2/10") from None
