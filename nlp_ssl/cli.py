"""Entry-point glue: bad input ends the run with one line naming the culprit, not a traceback."""

from __future__ import annotations

import logging
import sys

from nlp_ssl.errors import NlpSslError


def run(main) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        main()
    except NlpSslError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
